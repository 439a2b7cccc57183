import Foundation
import Logging
import PostgresNIO
import Synchronization
import TandemPostgres

/// A PostgreSQL server of the tests' own: Debian's binaries (`postgresql`), a new cluster in a
/// temporary directory, on 127.0.0.1 at a free port, with its settings given on its command line and
/// not taken from the machine. Run as the `postgres` user when the tests run as root (the server
/// refuses root). Stopped by its PID; its log is printed when it stops unexpectedly or when asked.
public final class PostgresServer: @unchecked Sendable {
    public let port: Int
    public let directory: String
    public let pid: Int32
    private let process: Process

    /// The server every test of this process shares, started at first use and stopped at exit.
    public static func shared() throws -> PostgresServer {
        try sharedServer.withLock { server in
            if let server { return server }
            let started = try PostgresServer.start()
            server = started
            atexit { PostgresServer.sharedServer.withLock { $0?.stop() } }
            return started
        }
    }

    private static let sharedServer = Mutex<PostgresServer?>(nil)

    /// The newest PostgreSQL's binaries that Debian installed.
    static func binaries() throws -> String {
        let root = "/usr/lib/postgresql"
        let versions = (try? FileManager.default.contentsOfDirectory(atPath: root)) ?? []
        guard let newest = versions.compactMap(Int.init).max() else {
            throw FixtureError("PostgreSQL is not installed (Debian: apt-get install postgresql); deploy/dev.sh test installs it")
        }
        return "\(root)/\(newest)/bin"
    }

    public static func start() throws -> PostgresServer {
        let bin = try binaries()
        let directory = NSTemporaryDirectory() + "tandem-pg-\(UUID().uuidString.prefix(8))"
        let data = directory + "/data"
        try FileManager.default.createDirectory(atPath: data, withIntermediateDirectories: true)
        let asRoot = getuid() == 0
        if asRoot {
            // The server's own user must own its files.
            guard let user = getpwnam("postgres") else { throw FixtureError("running as root needs the postgres user, which Debian's package makes") }
            for path in [directory, data] { chown(path, user.pointee.pw_uid, user.pointee.pw_gid) }
            chmod(directory, 0o755)
        }
        let log = directory + "/server.log"
        try run(asRoot, bin + "/initdb", ["-D", data, "-U", "tandem", "--auth=trust", "-E", "UTF8", "--no-sync", "--no-instructions"], log: log)
        for attempt in 0..<5 {
            let port = try freePort()
            let process = Process()
            let arguments = [
                bin + "/postgres", "-D", data, "-p", String(port), "-k", directory, "-c", "listen_addresses=127.0.0.1",
                "-c", "max_connections=200", "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
                "-c", "shared_buffers=64MB", "-c", "log_min_messages=warning", "-c", "logging_collector=off",
            ]
            // setpriv execs the server itself, so that the PID is the server's.
            process.executableURL = URL(fileURLWithPath: asRoot ? "/usr/bin/setpriv" : arguments[0])
            process.arguments = asRoot ? ["--reuid=postgres", "--regid=postgres", "--init-groups"] + arguments : Array(arguments.dropFirst())
            let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
            handle.seekToEndOfFile()
            process.standardOutput = handle
            process.standardError = handle
            try process.run()
            let server = PostgresServer(port: port, directory: directory, pid: process.processIdentifier, process: process)
            if server.waitUntilAccepting() { return server }
            server.stop(printLog: attempt == 4)
        }
        throw FixtureError("PostgreSQL did not start; its log: \(directory)/server.log")
    }

    private init(port: Int, directory: String, pid: Int32, process: Process) {
        self.port = port
        self.directory = directory
        self.pid = pid
        self.process = process
    }

    /// True once the server takes TCP connections (it listens only when it is ready).
    private func waitUntilAccepting() -> Bool {
        for _ in 0..<300 {
            guard process.isRunning else { return false }
            if Self.connects(port: port) { return true }
            usleep(50_000)
        }
        return false
    }

    /// Fast shutdown (SIGINT), then SIGKILL after 10 s; the log is printed if the server had already
    /// died or `printLog` says so.
    public func stop(printLog: Bool = false) {
        let diedEarly = !process.isRunning
        if !diedEarly {
            kill(pid, SIGINT)
            for _ in 0..<200 where process.isRunning { usleep(50_000) }
            if process.isRunning { kill(pid, SIGKILL) }
            process.waitUntilExit()
        }
        if diedEarly || printLog { print("PostgreSQL's log (\(directory)/server.log):\n\(log)") }
        if !diedEarly && !printLog { try? FileManager.default.removeItem(atPath: directory) }
    }

    public var log: String { (try? String(contentsOfFile: directory + "/server.log", encoding: .utf8)) ?? "" }

    /// A new, empty database of this server, and the URL that names it.
    public func makeDatabase() async throws -> String {
        let name = "t_" + UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased()
        var configuration = PostgresClient.Configuration(
            host: "127.0.0.1", port: port, username: "tandem", password: nil, database: "postgres", tls: .disable)
        configuration.options.maximumConnections = 1
        let client = PostgresClient(configuration: configuration, backgroundLogger: Logger(label: "tandem.test.postgres"))
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { await client.run() }
            defer { group.cancelAll() }
            try await client.query(PostgresQuery(unsafeSQL: "CREATE DATABASE \(name)"))
        }
        return url(database: name)
    }

    public func url(database: String) -> String { "postgres://tandem@127.0.0.1:\(port)/\(database)?sslmode=disable" }

    /// A port nothing listens on now (the kernel's choice for port 0).
    static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw FixtureError("socket: \(errno)") }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
        }
        guard bound else { throw FixtureError("bind: \(errno)") }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    static func connects(port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = UInt16(port).bigEndian
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
    }

    /// Runs a command to its end (as `postgres` when root), its output appended to `log`.
    static func run(_ asRoot: Bool, _ command: String, _ arguments: [String], log: String) throws {
        FileManager.default.createFile(atPath: log, contents: nil)
        if asRoot, let user = getpwnam("postgres") { chown(log, user.pointee.pw_uid, user.pointee.pw_gid) }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: asRoot ? "/usr/bin/setpriv" : command)
        process.arguments = asRoot ? ["--reuid=postgres", "--regid=postgres", "--init-groups", command] + arguments : arguments
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
        handle.seekToEndOfFile()
        process.standardOutput = handle
        process.standardError = handle
        try process.run()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
            throw FixtureError("\(command) failed (\(process.terminationStatus)): \(text)")
        }
    }
}

public struct FixtureError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}
