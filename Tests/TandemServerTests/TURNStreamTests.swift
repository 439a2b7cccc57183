import Foundation
import TandemSTUN
import Testing

@testable import TandemServer
@testable import TandemTURN

#if canImport(Glibc)
import Glibc
#endif

/// TURN over TCP: what a client that opens many connections, holds them idle, or sends and never reads
/// can do to the server (each connection is a file descriptor of the whole process).
@Suite("TURN over TCP: bounded connections")
struct TURNStreamTests {
    static func config(perIP: Int = 3, idle: Duration = .seconds(1)) -> ServerConfig {
        var c = TURNDatagramTests.dualStack
        c.turn?.service.streams.perIP = perIP
        c.turn?.service.streams.idleWithoutAllocation = idle
        c.turn?.service.streams.queuedBytes = 16 * 1024
        // Every Binding is answered, so that a client that never reads fills its queue.
        c.turn?.service.policy.unauthenticatedAnswersPerSource = 0
        return c
    }

    /// A blocking TCP socket connected to 127.0.0.1:`port`.
    static func connect(_ port: Int) throws -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        try #require(result == 0, "connect: errno \(errno)")
        return fd
    }

    /// Runs blocking socket calls on a thread of their own: never on the two threads every test's
    /// server shares.
    static func offPool<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
        await withCheckedContinuation { done in Thread { done.resume(returning: body()) }.start() }
    }

    enum Read: Equatable { case bytes(Int), closed, nothing }

    /// What the socket gives within `seconds`: some bytes, the end of the stream, or nothing.
    static func read(_ fd: Int32, within seconds: Double) async -> Read {
        await offPool { readNow(fd, within: seconds) }
    }

    static func readNow(_ fd: Int32, within seconds: Double) -> Read {
        var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        guard poll(&poller, 1, Int32(seconds * 1000)) == 1 else { return .nothing }
        var buffer = [UInt8](repeating: 0, count: 4096)
        let n = recv(fd, &buffer, buffer.count, 0)
        return n > 0 ? .bytes(n) : .closed
    }

    static func binding() -> [UInt8] {
        STUNMessageBuilder(method: .binding, class: .request, transactionID: .random()).bytes
    }

    static func send(_ fd: Int32, _ bytes: [UInt8]) -> Int { bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) } }

    /// A UDP client's allocation relays on: the TURN service as a whole carried on.
    static func udpStillRelays(_ server: TestServer) async throws {
        var client = try await TURNDatagramTests.Client.join(server)
        let peer = try await UDPProbe.open()
        defer { Task { [probe = client.probe] in await probe.close(); await peer.close() } }
        let relayed = try #require(try await client.allocate().first)
        try await client.bind(0x4000, to: TransportAddress("127.0.0.1:\(peer.port)")!)
        try await client.roundTrip(0x4000, peer: peer, relayed: relayed)
    }

    static func turnPort(_ server: TestServer) async throws -> Int {
        try await TURNDatagramTests.Client.join(server).port
    }

    @Test func connectionsPastThePerAddressLimitAreClosedAtOnce() async throws {
        try await TestServer.with(Self.config(idle: .seconds(60))) { server in
            let port = try await Self.turnPort(server)
            var open: [Int32] = []
            defer { for fd in open { close(fd) } }
            for _ in 0..<3 {
                let fd = try Self.connect(port)
                open.append(fd)
                #expect(Self.send(fd, Self.binding()) == 20)
                #expect(await Self.read(fd, within: 5) != .closed)
            }
            let fourth = try Self.connect(port)
            defer { close(fourth) }
            #expect(await Self.read(fourth, within: 5) == .closed)
            // A place freed is a place for the next one.
            close(open.removeFirst())
            try await Task.sleep(for: .milliseconds(200))
            let fifth = try Self.connect(port)
            open.append(fifth)
            #expect(Self.send(fifth, Self.binding()) == 20)
            #expect(await Self.read(fifth, within: 5) != .closed)
            try await Self.udpStillRelays(server)
        }
    }

    @Test func aConnectionWithoutAnAllocationIsClosed() async throws {
        try await TestServer.with(Self.config()) { server in
            let port = try await Self.turnPort(server)
            let silent = try Self.connect(port)
            let talker = try Self.connect(port)
            defer { close(silent); close(talker) }
            #expect(Self.send(talker, Self.binding()) == 20)
            guard case .bytes = await Self.read(talker, within: 5) else {
                Issue.record("no answer to a Binding request")
                return
            }
            // Both go within a few ticks of the 1 s limit (nothing is asserted about how soon).
            #expect(await Self.read(silent, within: 15) == .closed)
            #expect(await Self.read(talker, within: 15) == .closed)
            try await Self.udpStillRelays(server)
        }
    }

    /// A client that sends requests and never reads their answers fills its own socket: the server stops
    /// reading it instead of queueing answers without end.
    @Test func aClientThatNeverReadsIsNotRead() async throws {
        try await TestServer.with(Self.config(idle: .seconds(60))) { server in
            let port = try await Self.turnPort(server)
            let fd = try Self.connect(port)
            defer { close(fd) }
            var small: Int32 = 4096
            setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, socklen_t(MemoryLayout<Int32>.size))
            setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &small, socklen_t(MemoryLayout<Int32>.size))
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
            let (written, blocked, error) = await Self.offPool { Self.flood(fd) }
            #expect(blocked, "the server read \(written) bytes of requests without their answers being read (errno \(error))")
            try await Self.udpStillRelays(server)
        }
    }

    /// Sends Binding requests until the socket stays full for 2 s (true) or 64 MB went (false): that many
    /// would queue 160 MB of answers on a server that read them all.
    static func flood(_ fd: Int32) -> (written: Int, blocked: Bool, errno: Int32) {
        let chunk = (0..<512).flatMap { _ in Self.binding() }
        var written = 0
        var blocked = false
        while written < 64 << 20 {
            // Whole messages only: what a short send left is sent first.
            let start = written % chunk.count
            let n = Self.send(fd, Array(chunk[start...]))
            if n < 0 {
                guard errno == EAGAIN || errno == EWOULDBLOCK else { break }
                // Give the server time to read more, if it still reads.
                var poller = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
                if poll(&poller, 1, 2000) == 0 {
                    blocked = true
                    break
                }
                continue
            }
            written += n
        }
        return (written, blocked, errno)
    }
}
