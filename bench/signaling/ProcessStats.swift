import Foundation
import NIOSSL

/// A server process started by the benchmark, with what /proc tells about it.
final class ServerProcess: @unchecked Sendable {
    let name: String
    let process: Process
    let port: Int
    private let output: LineCollector

    /// Starts `arguments` and waits for the line that carries the bound port (`portPrefix` followed by
    /// digits) on stdout or stderr.
    init(name: String, executable: String, arguments: [String], portPrefix: String) throws {
        self.name = name
        process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        let out = Pipe()
        let err = Pipe()
        process.standardOutput = out
        process.standardError = err
        output = LineCollector()
        let found = LineCollector.PortWaiter(prefix: portPrefix)
        for pipe in [out, err] {
            let collector = output
            pipe.fileHandleForReading.readabilityHandler = { handle in
                let data = handle.availableData
                guard !data.isEmpty else {
                    handle.readabilityHandler = nil
                    return
                }
                let text = String(decoding: data, as: UTF8.self)
                collector.append(text)
                found.scan(text)
            }
        }
        try process.run()
        guard let port = found.wait(seconds: 60) else {
            process.terminate()
            throw BenchError("\(name) did not report its port; it said:\n\(output.text)")
        }
        self.port = port
    }

    var pid: Int32 { process.processIdentifier }

    /// Resident set size in bytes.
    func rss() -> Int {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return 0 }
        for line in status.split(separator: "\n") where line.hasPrefix("VmRSS:") {
            let kb = line.split(separator: " ").compactMap { Int($0) }.first ?? 0
            return kb * 1024
        }
        return 0
    }

    /// User plus system CPU time used so far.
    func cpu() -> Duration {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let close = stat.lastIndex(of: ")")
        else { return .zero }
        // Fields after the command name: state is field 3, utime 14 and stime 15.
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        guard fields.count > 13, let user = Int(fields[11]), let system = Int(fields[12]) else { return .zero }
        let ticks = sysconf(Int32(_SC_CLK_TCK))
        return .microseconds((user + system) * 1_000_000 / ticks)
    }

    /// Has `tandem certs dev` make a CA and a server pair in `directory`; a client configuration that
    /// trusts that CA.
    static func devCertificates(tandem: String, into directory: String) throws -> TLSConfiguration {
        let made = Process()
        made.executableURL = URL(fileURLWithPath: tandem)
        made.arguments = ["certs", "dev", "--out", directory]
        made.standardOutput = FileHandle.nullDevice
        try made.run()
        made.waitUntilExit()
        guard made.terminationStatus == 0 else { throw BenchError("\(tandem) certs dev failed") }
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.trustRoots = .file(directory + "/ca.pem")
        return tls
    }

    func stop() {
        guard process.isRunning else { return }
        process.terminate()
        process.waitUntilExit()
    }
}

/// Collects a child's stdout and stderr, and finds the port it announces.
final class LineCollector: @unchecked Sendable {
    private let lock = NSLock()
    private var buffer = ""

    func append(_ text: String) {
        lock.lock()
        buffer += text
        if buffer.utf8.count > 1 << 20 { buffer = String(buffer.suffix(1 << 19)) }
        lock.unlock()
    }

    var text: String {
        lock.lock()
        defer { lock.unlock() }
        return buffer
    }

    final class PortWaiter: @unchecked Sendable {
        let prefix: String
        private let condition = NSCondition()
        private var seen = ""
        private var port: Int?

        init(prefix: String) { self.prefix = prefix }

        func scan(_ text: String) {
            condition.lock()
            defer { condition.unlock() }
            guard port == nil else { return }
            seen += text
            if let range = seen.range(of: prefix) {
                let digits = seen[range.upperBound...].prefix { $0.isNumber }
                if let p = Int(digits), digits.count < seen[range.upperBound...].count {
                    port = p
                    condition.broadcast()
                }
            }
        }

        func wait(seconds: Double) -> Int? {
            condition.lock()
            defer { condition.unlock() }
            let deadline = Date().addingTimeInterval(seconds)
            while port == nil, condition.wait(until: deadline) {}
            return port
        }
    }
}

struct BenchError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
