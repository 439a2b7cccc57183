import Foundation
import TandemSTUN
import Testing

@testable import TandemServer
@testable import TandemTURN
@testable import TandemTURNService

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

    static func binding() -> [UInt8] {
        STUNMessageBuilder(method: .binding, class: .request, transactionID: .random()).bytes
    }


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
                let fd = try RawTCP.connect(port)
                open.append(fd)
                #expect(RawTCP.send(fd, Self.binding()) == 20)
                #expect(await RawTCP.read(fd, within: 5) != .closed)
            }
            let fourth = try RawTCP.connect(port)
            defer { close(fourth) }
            #expect(await RawTCP.read(fourth, within: 5) == .closed)
            // A place freed is a place for the next one.
            close(open.removeFirst())
            try await Task.sleep(for: .milliseconds(200))
            let fifth = try RawTCP.connect(port)
            open.append(fifth)
            #expect(RawTCP.send(fifth, Self.binding()) == 20)
            #expect(await RawTCP.read(fifth, within: 5) != .closed)
            try await Self.udpStillRelays(server)
        }
    }

    /// Both limits, in all and per address, and a released place taken again.
    @Test func admissionCountsConnectionsInAllAndPerAddress() {
        var limits = StreamLimits()
        limits.total = 3
        limits.perIP = 2
        let admission = StreamAdmission(limits)
        let (a, b, c) = (IPAddress("192.0.2.1")!, IPAddress("192.0.2.2")!, IPAddress("192.0.2.3")!)
        #expect([admission.admit(a), admission.admit(a), admission.admit(a)] == [true, true, false])
        #expect([admission.admit(b), admission.admit(c)] == [true, false], "three in all")
        admission.release(a)
        #expect([admission.admit(c), admission.admit(c)] == [true, false])
    }

    @Test func aConnectionWithoutAnAllocationIsClosed() async throws {
        try await TestServer.with(Self.config()) { server in
            let port = try await Self.turnPort(server)
            let silent = try RawTCP.connect(port)
            let talker = try RawTCP.connect(port)
            defer { close(silent); close(talker) }
            #expect(RawTCP.send(talker, Self.binding()) == 20)
            guard case .bytes = await RawTCP.read(talker, within: 5) else {
                Issue.record("no answer to a Binding request")
                return
            }
            // Both go within a few ticks of the 1 s limit (nothing is asserted about how soon).
            #expect(await RawTCP.read(silent, within: 15) == .closed)
            #expect(await RawTCP.read(talker, within: 15) == .closed)
            try await Self.udpStillRelays(server)
        }
    }

    /// A client that sends requests and never reads their answers fills its own socket: the server stops
    /// reading it instead of queueing answers without end.
    @Test func aClientThatNeverReadsIsNotRead() async throws {
        try await TestServer.with(Self.config(idle: .seconds(60))) { server in
            let port = try await Self.turnPort(server)
            let fd = try RawTCP.connect(port)
            defer { close(fd) }
            var small: Int32 = 4096
            setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, socklen_t(MemoryLayout<Int32>.size))
            setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &small, socklen_t(MemoryLayout<Int32>.size))
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
            let (written, blocked, error) = await RawTCP.offPool { Self.flood(fd) }
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
            let n = RawTCP.send(fd, Array(chunk[start...]))
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
