import Synchronization
import Testing

@testable import TandemMedia
@testable import TandemMediaCore

/// Records what an agent reports, from the loop thread, for the test's thread to read.
final class ICERecorder: ICEAgentDelegate, Sendable {
    struct Seen {
        var candidates: [String] = []
        var gatheringDone = false
        var states: [ICEState] = []
        var received: [[UInt8]] = []
    }
    let seen = Mutex(Seen())

    func ice(gathered candidate: String) { seen.withLock { $0.candidates.append(candidate) } }
    func iceGatheringDone() { seen.withLock { $0.gatheringDone = true } }
    func ice(state: ICEState) { seen.withLock { $0.states.append(state) } }
    func ice(received datagram: UnsafeMutableRawBufferPointer) { seen.withLock { $0.received.append(Array(datagram)) } }
}

/// Runs `body` on `loop` and waits for its result.
func onLoop<T: Sendable>(_ loop: MediaLoop, _ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        loop.execute { continuation.resume(with: Result { try body() }) }
    }
}

/// Polls `condition` every 10 ms for up to `seconds`.
func eventually(_ seconds: Double = 10, _ condition: () -> Bool) async -> Bool {
    for _ in 0..<Int(seconds * 100) {
        if condition() { return true }
        try? await Task.sleep(for: .milliseconds(10))
    }
    return condition()
}

/// An agent and its recorder, made and used on one loop.
final class AgentBox: @unchecked Sendable {
    var agent: ICEAgent!
}

@Suite struct ICETests {
    static let pool = MediaLoopPool(threads: 2)

    @Test func twoAgentsConnectOnLoopbackAndCarryDatagrams() async throws {
        let loop = Self.pool.loops[0]
        let (ra, rb) = (ICERecorder(), ICERecorder())
        let (a, b) = (AgentBox(), AgentBox())
        let config = ICEConfiguration(addresses: ["127.0.0.1"])
        let (credentials, ca, cb) = try await onLoop(loop) { () throws -> ([String], [String], [String]) in
            a.agent = try ICEAgent(loop: loop, configuration: config, controlling: true, delegate: ra)
            b.agent = try ICEAgent(loop: loop, configuration: config, controlling: false, delegate: rb)
            // Host candidates are gathered inside start(), which returns them instead of calling the delegate.
            let (ca, doneA) = try a.agent.start()
            let (cb, doneB) = try b.agent.start()
            #expect(doneA && doneB)
            return ([a.agent.localUfrag, a.agent.localPassword, b.agent.localUfrag, b.agent.localPassword], ca, cb)
        }
        #expect(credentials.allSatisfy { !$0.isEmpty })
        #expect(credentials[0] != credentials[2])
        #expect(!ca.isEmpty && ca.allSatisfy { $0.hasPrefix("candidate:") && $0.contains("127.0.0.1") && $0.contains("typ host") })
        #expect(ra.seen.withLock { $0.candidates.isEmpty && !$0.gatheringDone }, "nothing gathered later")

        let added = try await onLoop(loop) { () -> [Bool] in
            var ok = [a.agent.setRemoteCredentials(ufrag: credentials[2], password: credentials[3])]
            ok.append(b.agent.setRemoteCredentials(ufrag: credentials[0], password: credentials[1]))
            ok += cb.map { a.agent.addRemoteCandidate($0) }
            ok += ca.map { b.agent.addRemoteCandidate("a=" + $0) }
            // What a browser may send and libnice cannot use: refused, nothing else disturbed.
            ok.append(!b.agent.addRemoteCandidate("candidate:1 1 udp 2122260223 f0e1d2c3.local 54321 typ host"))
            ok.append(!b.agent.addRemoteCandidate("candidate:garbage"))
            ok.append(!b.agent.addRemoteCandidate(String(repeating: "x", count: 4000)))
            a.agent.remoteGatheringDone()
            b.agent.remoteGatheringDone()
            return ok
        }
        #expect(added.allSatisfy { $0 })
        #expect(await eventually { ra.seen.withLock { $0.states.contains(.connected) } && rb.seen.withLock { $0.states.contains(.connected) } })

        let sent = try await onLoop(loop) { () -> Bool in
            let one: [UInt8] = [0x80, 1, 2, 3]
            let two: [UInt8] = [0x16, 0xfe, 0xfd, 9]
            return one.withUnsafeBytes { a.agent.send($0.baseAddress!, count: 4) } && two.withUnsafeBytes { b.agent.send($0.baseAddress!, count: 4) }
        }
        #expect(sent)
        #expect(await eventually { rb.seen.withLock { $0.received.contains([0x80, 1, 2, 3]) } && ra.seen.withLock { $0.received.contains([0x16, 0xfe, 0xfd, 9]) } })
        #expect(!ra.seen.withLock { $0.states.contains(.failed) })

        try await onLoop(loop) {
            a.agent.close()
            b.agent.close()
        }
    }

    @Test func announcedAddressesReplaceHostCandidatesOfTheirFamily() {
        let config = ICEConfiguration(addresses: ["10.0.0.5", "fd00::5"], announced: ["203.0.113.7"])
        #expect(config.advertised("candidate:1 1 UDP 2015363327 10.0.0.5 40000 typ host") == "candidate:1 1 UDP 2015363327 203.0.113.7 40000 typ host")
        // No IPv6 address announced: IPv6 candidates stay; neither do non-host candidates change.
        #expect(config.advertised("candidate:2 1 UDP 2015363327 fd00::5 40002 typ host") == "candidate:2 1 UDP 2015363327 fd00::5 40002 typ host")
        let srflx = "candidate:3 1 UDP 1677721855 198.51.100.1 40004 typ srflx raddr 10.0.0.5 rport 40000"
        #expect(config.advertised(srflx) == srflx)
        #expect(ICEConfiguration(addresses: ["fd00::5"], announced: ["2001:db8::7"]).advertised("candidate:2 1 UDP 1 fd00::5 9 typ host") == "candidate:2 1 UDP 1 2001:db8::7 9 typ host")
        #expect(config.advertised("garbage") == "garbage")
    }

    @Test func remoteAddressesThatPointTheServerAtItselfAreRefused() {
        let production = ICEConfiguration(addresses: ["10.0.0.5"], allowLoopbackCandidates: false)
        for accepted in ["203.0.113.9", "192.168.1.20", "10.1.2.3", "2001:db8::9", "fd00::1", "::ffff:203.0.113.9"] {
            #expect(production.acceptsRemote(address: accepted), "\(accepted)")
        }
        for refused in ["127.0.0.1", "127.9.9.9", "::1", "::ffff:127.0.0.1", "0.0.0.0", "::", "169.254.1.1", "fe80::1", "224.0.0.251",
                        "ff02::fb", "255.255.255.255", "f0e1d2c3.local", ""] {
            #expect(!production.acceptsRemote(address: refused), "\(refused)")
        }
        #expect(ICEConfiguration(addresses: ["127.0.0.1"]).acceptsRemote(address: "127.0.0.1"), "development allows loopback")
    }

    /// The check runs on the address as libnice parsed it, so other spellings of loopback do not pass.
    @Test func anAgentRefusesLoopbackCandidatesInAnySpelling() async throws {
        let loop = Self.pool.loops[1]
        let added = try await onLoop(loop) { () throws -> [String: Bool] in
            let agent = try ICEAgent(
                loop: loop, configuration: ICEConfiguration(addresses: ["127.0.0.1"], allowLoopbackCandidates: false), controlling: false,
                delegate: ICERecorder())
            defer { agent.close() }
            try agent.start()
            var added: [String: Bool] = [:]
            for address in ["127.1", "127.0.0.1", "0:0:0:0:0:0:0:1", "::ffff:127.0.0.1", "192.0.2.7"] {
                added[address] = agent.addRemoteCandidate("candidate:1 1 udp 2122260223 \(address) 50000 typ host")
            }
            return added
        }
        #expect(added == ["127.1": false, "127.0.0.1": false, "0:0:0:0:0:0:0:1": false, "::ffff:127.0.0.1": false, "192.0.2.7": true])
    }

    @Test func noUsableAddressIsAClearError() async throws {
        let loop = Self.pool.loops[1]
        let error = try await onLoop(loop) { () -> MediaError? in
            do {
                _ = try ICEAgent(loop: loop, configuration: ICEConfiguration(addresses: ["not-an-ip"]), controlling: false, delegate: ICERecorder())
                return nil
            } catch let e as MediaError { return e }
        }
        #expect(error?.code == .unavailable)
    }

    @Test func poolPlacesASessionOnOneLoopAndTimersFire() async throws {
        #expect(Self.pool.loop(for: "abc") === Self.pool.loop(for: "abc"))
        let loops = Set((0..<50).map { ObjectIdentifier(Self.pool.loop(for: "session-\($0)")) })
        #expect(loops.count == 2)
        let loop = Self.pool.loops[1]
        let fired = Mutex([Int]())
        try await onLoop(loop) {
            let cancelled = loop.schedule(afterMs: 5) { fired.withLock { $0.append(1) } }
            loop.schedule(afterMs: 10) { fired.withLock { $0.append(2) } }
            cancelled.cancel()
            #expect(loop.isCurrent)
        }
        #expect(!loop.isCurrent)
        #expect(await eventually { fired.withLock { $0 } == [2] })
        try? await Task.sleep(for: .milliseconds(30))
        #expect(fired.withLock { $0 } == [2])
    }
}
