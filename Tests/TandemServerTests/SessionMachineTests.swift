import Foundation
import TandemArbiter
import TandemMedia
import TandemProtocol
import TandemSFU
import TandemStore
import Testing

@testable import TandemServer

/// Drives a ``SessionMachine`` with inputs and time, answering nothing on its own: each test says what
/// the store answers.
struct MachineHarness {
    var machine: SessionMachine
    var now = Instant.zero
    var wallMs: Int64 = 1_800_000_000_000
    var nextTicket: UInt64 = 0
    var tickets: [String: Ticket] = [:]

    init(_ edit: (inout SessionMachine.Environment) -> Void = { _ in }) {
        var config = ServerConfig()
        config.node = "n1"
        config.arbiter.enabled = [.p2p, .relay]
        var env = SessionMachine.Environment(config: config, iceServers: ICEServerMint(settings: nil, staticServers: []), hasRelay: true)
        edit(&env)
        machine = SessionMachine(session: SessionID("s1")!, env: env, lastEpoch: 0)
    }

    /// The effects of one input, each said in a few words.
    mutating func feed(_ input: SessionInput) -> [String] {
        machine.handle(input, now: now, wallMs: wallMs).map(Self.describe)
    }

    /// `resume` is `(participant, key, lastSeq)`.
    mutating func arrival(_ name: String, connection: UInt64, offered: Set<ProviderName>? = nil, resume: (String, String, Int)? = nil) -> JoinArrival {
        nextTicket += 1
        let ticket = Ticket(raw: nextTicket)
        tickets[name] = ticket
        var json = #"{"type":"join","session":"s1","name":"\#(name)""#
        if let offered { json += #","providers":[\#(offered.map { "\"\($0.rawValue)\"" }.sorted().joined(separator: ","))]"# }
        if let (participant, key, lastSeq) = resume { json += #","resume":{"participant":"\#(participant)","key":"\#(key)","lastSeq":\#(lastSeq)}"# }
        guard case .join(let request) = try! ClientMessage.decode(Array((json + "}").utf8)) else { fatalError("not a join: \(json)") }
        return JoinArrival(
            ticket: ticket, request: request, identity: nil, connection: connection, receivedAt: .now, participant: ParticipantID(name),
            resumeKey: "key-\(name)")
    }

    /// A fresh join through its reads: the scores as given, and the claim (for the first joiner) as asked.
    mutating func join(_ name: String, connection: UInt64, offered: Set<ProviderName>? = nil) -> [String] {
        let arrival = arrival(name, connection: connection, offered: offered)
        var effects = feed(.join(arrival))
        if effects.last == "read scores" {
            effects += feed(.answered(arrival.ticket, .scores(ProviderScores())))
        }
        if let claim = effects.last, claim.hasPrefix("read claim ") {
            let provider = ProviderName(rawValue: String(claim.dropFirst("read claim ".count)))!
            effects += feed(.answered(arrival.ticket, .claimed(ProviderState(name: provider, epoch: machine.arbiter.epoch + 1))))
        }
        return effects
    }

    mutating func message(_ from: String, connection: UInt64, _ json: String) -> [String] {
        feed(.message(ParticipantID(from), connection: connection, try! ClientMessage.decode(Array(json.utf8))))
    }

    static func describe(_ effect: SessionEffect) -> String {
        switch effect {
        case let .send(connection, logged, type, error):
            let to = connection.map { "\(logged.participant)@\($0)" } ?? "\(logged.participant) (no socket)"
            return "send \(type)\(error.map { " \($0.rawValue)" } ?? "") to \(to) #\(logged.seq)"
        case let .resend(connection, frame): return "resend \(frame.count) bytes to @\(connection)"
        case let .closeSocket(connection, code, _): return "close @\(connection) \(code)"
        case .write(let write):
            switch write {
            case .presence(let p): return "write presence \(p.participant) \(p.state.rawValue)"
            case .removeParticipant(let id): return "write remove \(id)"
            case .health(let sample): return "write health \(sample.participant)"
            case .alert(let alert): return "write alert \(alert.kind.rawValue)"
            case let .adjustScore(provider, delta): return "write score \(provider) \(delta)"
            case .endSession: return "write end"
            case .releaseHome: return "write release"
            case let .switchProvider(expected, to, reason, _): return "write switch \(expected)→\(to) \(reason.rawValue)"
            }
        case .read(let read):
            switch read {
            case .scores: return "read scores"
            case let .claim(_, proposed): return "read claim \(proposed)"
            case let .resumeLog(_, id, after): return "read resume-log \(id) after \(after)"
            }
        case let .replyJoin(_, result):
            switch result {
            case .joined(let id): return "reply joined \(id)"
            case .rejected(let error): return "reply rejected \(error.code.rawValue)"
            case .retry: return "reply retry"
            }
        case let .replySwitch(_, result):
            switch result {
            case .success(let state): return "reply switched \(state.name)@\(state.epoch)"
            case .failure(let error): return "reply refused \(error.code.rawValue)"
            }
        case .replySnapshot(_, let snapshot): return "reply snapshot \(snapshot?.participants.count ?? -1)"
        case .relay(let command):
            switch command {
            case .open(let epoch): return "relay open \(epoch)"
            case .close(let now): return now ? "relay close now" : "relay close after grace"
            case let .signal(id, input): return "relay signal \(id) \(input)"
            case .remove(let id): return "relay remove \(id)"
            }
        case .sfu(let command):
            switch command {
            case let .prepare(attempt, room, missing, _, _):
                return "sfu prepare \(attempt)\(room == nil ? " room" : "") tokens \(missing.map(\.rawValue).sorted().joined(separator: ","))"
            case .end(let after): return "sfu end after \(after.map(String.init) ?? "-")"
            }
        case .metric(let metric):
            switch metric {
            case .joined: return "metric joined"
            case .left: return "metric left"
            case .switched(let reason): return "metric switched \(reason.rawValue)"
            case .healthReport: return "metric health"
            case let .sfuPrepared(ok, _): return "metric sfu \(ok ? "ok" : "failed")"
            }
        case let .log(level, message, _): return "log \(level) \(message)"
        case .ended: return "ended"
        }
    }
}

@Suite("Session machine: input → effects")
struct SessionMachineTests {
    @Test func theFirstJoinerReadsClaimsAndIsWelcomed() {
        var h = MachineHarness()
        let arrival = h.arrival("a", connection: 1)
        #expect(h.feed(.join(arrival)) == ["read scores"])
        #expect(h.machine.isWaitingForStore)
        #expect(h.feed(.answered(arrival.ticket, .scores(ProviderScores()))) == ["read claim p2p"])
        #expect(
            h.feed(.answered(arrival.ticket, .claimed(ProviderState(name: .p2p, epoch: 1)))) == [
                "send welcome to a@1 #1", "metric joined", "write presence a active", "reply joined a",
            ])
        #expect(h.machine.connectionsInUse == [1] && h.machine.connectionsInUseCount == 1)
    }

    @Test func theSecondJoinerIsIntroducedAndNeedsNoClaim() {
        var h = MachineHarness()
        _ = h.join("a", connection: 1)
        #expect(
            h.join("b", connection: 2) == [
                "read scores", "send welcome to b@2 #1", "send peer-joined to a@1 #2", "metric joined", "write presence b active",
                "reply joined b",
            ])
    }

    /// The store's claim wins over the proposal: a session that another writer put on the relay
    /// welcomes its first joiner there, and the relay opens for that epoch.
    @Test func theClaimedProviderIsTheSessions() {
        var h = MachineHarness()
        let arrival = h.arrival("a", connection: 1)
        _ = h.feed(.join(arrival))
        _ = h.feed(.answered(arrival.ticket, .scores(ProviderScores())))
        let effects = h.feed(.answered(arrival.ticket, .claimed(ProviderState(name: .relay, epoch: 4))))
        #expect(effects.contains("relay open 4"))
        #expect(h.machine.arbiter.provider == .relay && h.machine.arbiter.epoch == 4)
    }

    @Test func aStoreFailureRefusesTheJoinAndLeavesNoSession() {
        var h = MachineHarness()
        let arrival = h.arrival("a", connection: 1)
        _ = h.feed(.join(arrival))
        #expect(
            h.feed(.answered(arrival.ticket, .failed)) == [
                "log error store failed during join", "write end", "write release", "ended", "reply rejected internal",
            ])
        #expect(h.machine.closed)
        // A join that reaches a closed session is sent back to the hub.
        #expect(h.feed(.join(h.arrival("b", connection: 2))) == ["reply retry"])
    }

    @Test(arguments: [
        // (message from a, effects)
        (#"{"type":"signal","to":"b","data":{"kind":"offer","sdp":"v=0","epoch":1}}"#, ["send signal to b@2 #2"]),
        (#"{"type":"signal","to":"b","data":{"kind":"offer","sdp":"v=0","epoch":7}}"#, ["send error stale_epoch to a@1 #3"]),
        (#"{"type":"signal","to":"zed","data":{"kind":"offer","sdp":"v=0","epoch":1}}"#, ["send error unknown_peer to a@1 #3"]),
        (#"{"type":"signal","to":"a","data":{"kind":"offer","sdp":"v=0","epoch":1}}"#, ["send error unknown_peer to a@1 #3"]),
        (#"{"type":"signal","to":"server","data":{"kind":"offer","sdp":"v=0","epoch":1}}"#, ["send error provider_unavailable to a@1 #3"]),
        (#"{"type":"ping","t":5}"#, ["send pong to a@1 #3"]),
        (#"{"type":"join","session":"s1"}"#, ["send error already_joined to a@1 #3"]),
        // Connected on p2p: kept, the provider's score rises, and both hear the quality.
        (
            #"{"type":"health","epoch":1,"provider":"p2p","media":"connected","rttMs":40}"#,
            ["metric health", "write health a", "write score p2p 5", "send quality to a@1 #3", "send quality to b@2 #2"]
        ),
    ])
    func messagesOfAJoinedParticipant(json: String, effects: [String]) {
        var h = MachineHarness()
        _ = h.join("a", connection: 1)
        _ = h.join("b", connection: 2)
        #expect(h.message("a", connection: 1, json) == effects)
    }

    /// A message that arrives from a socket the participant no longer uses is dropped.
    @Test func aReplacedSocketIsNotHeard() {
        var h = MachineHarness()
        _ = h.join("a", connection: 1)
        #expect(h.message("a", connection: 99, #"{"type":"ping","t":5}"#) == [])
    }

    /// Sustained bad quality: the compare-and-set is written before anybody is told, both hear the
    /// same epoch, and the relay opens for it.
    @Test func badQualityMovesEverybodyOnceStoreFirst() {
        var h = MachineHarness { $0.config.arbiter.qualityTarget = .relay }
        _ = h.join("a", connection: 1)
        _ = h.join("b", connection: 2)
        let bad = #"{"type":"health","epoch":1,"provider":"p2p","media":"connected","rttMs":900,"lossPct":20}"#
        var effects: [String] = []
        for second in 1...4 {
            h.now = .seconds(Double(second))
            effects += h.message("a", connection: 1, bad)
        }
        let switched = effects.filter { $0.hasPrefix("write switch") || $0.hasPrefix("send provider") || $0.hasPrefix("relay") }
        // (Sequence numbers aside: alerts and quality went before.)
        #expect(
            switched.map { $0.split(separator: " #").first.map(String.init) ?? $0 } == [
                "write switch 1→relay quality", "send provider to a@1", "send provider to b@2", "relay open 2",
            ])
        #expect(h.machine.arbiter.epoch == 2)
    }

    /// Another writer moved the session first: the machine follows the store and tells everybody.
    @Test func aStoreThatMovedOnIsFollowed() {
        var h = MachineHarness()
        _ = h.join("a", connection: 1)
        _ = h.join("b", connection: 2)
        #expect(
            h.feed(.storeMoved(ProviderState(name: .relay, epoch: 5), .failure)) == [
                "metric switched failure", "log info provider switch", "send provider to a@1 #3", "send provider to b@2 #2", "relay open 5",
            ])
        #expect(h.feed(.storeMoved(ProviderState(name: .p2p, epoch: 3), .failure)) == [])
    }

    @Test func aDroppedSocketResumesWithWhatItMissed() {
        var h = MachineHarness()
        _ = h.join("a", connection: 1)
        _ = h.join("b", connection: 2)
        #expect(h.feed(.socketClosed(ParticipantID("a"), connection: 1)) == ["send peer-state to b@2 #2", "write presence a reconnecting"])
        #expect(h.message("b", connection: 2, #"{"type":"signal","to":"a","data":{"kind":"offer","sdp":"v=0","epoch":1}}"#) == [
            "send signal to a (no socket) #3"
        ])
        let resume = h.arrival("a2", connection: 3, resume: ("a", "key-a", 2))
        #expect(h.feed(.join(resume)) == ["read resume-log a after 2"])
        #expect(
            h.feed(.answered(resume.ticket, .resumeLog([[1, 2, 3]]))) == [
                "resend 3 bytes to @3", "send welcome to a@3 #4", "send peer-state to b@2 #3", "write presence a active", "reply joined a",
            ])
        // A wrong key is refused without a read.
        let forged = h.arrival("a3", connection: 4, resume: ("a", "guess", 0))
        #expect(h.feed(.join(forged)) == ["reply rejected resume_failed"])
    }

    @Test func theLastLeaveEndsTheSession() {
        var h = MachineHarness()
        _ = h.join("a", connection: 1)
        #expect(
            h.message("a", connection: 1, #"{"type":"leave"}"#) == [
                "metric left", "close @1 1000", "write remove a", "write end", "write release", "ended",
            ])
        #expect(h.machine.connectionsInUse.isEmpty && h.machine.connectionsInUseCount == 0)
    }

    /// A joiner that lands on the SFU waits for its room and token off the session's task; the join
    /// after it queues; both go, in order, once the room exists.
    @Test func joinsWaitForTheSFUInOrder() {
        var h = MachineHarness {
            $0.sfuName = "daily"
            $0.config.arbiter.enabled = [.p2p, .sfu]
        }
        let first = h.join("a", connection: 1, offered: [.sfu])
        #expect(first.suffix(1) == ["sfu prepare 1 room tokens a"])
        let second = h.arrival("b", connection: 2, offered: [.sfu])
        #expect(h.feed(.join(second)) == [])
        let room = SFURoom(name: "s1", url: "https://sfu.example/s1", expiresAt: nil)
        let made = h.feed(.sfuPrepared(attempt: 1, .success(SFUMade(room: room, tokens: [ParticipantID("a"): "t-a"]))))
        #expect(made.prefix(2) == ["log info SFU room ready", "metric sfu ok"])
        #expect(made.contains("reply joined a"))
        #expect(made.last == "read scores")  // b's join starts once a's is settled
        let rest = h.feed(.answered(h.tickets["b"]!, .scores(ProviderScores())))
        #expect(rest == ["sfu prepare 2 tokens b"])
        // A failure that began after b's join refuses it.
        let failed = h.feed(.sfuPrepared(attempt: 2, .failure(SFUError(.unavailable, status: 503, info: "down"))))
        #expect(failed.contains("reply rejected provider_unavailable"))
    }

    /// Another node took the session over: everybody is told to resume, and the session is not ended
    /// in the store (it goes on at its new home).
    @Test func aFencedSessionStopsWithoutEnding() {
        var h = MachineHarness()
        _ = h.join("a", connection: 1)
        _ = h.join("b", connection: 2)
        let effects = h.feed(.fence)
        #expect(effects.sorted() == ["close @1 4000", "close @2 4000", "ended"])
        #expect(!effects.contains("write end"))
        #expect(h.machine.closed)
        #expect(h.feed(.tick) == [])
    }

    /// Without its lease the node decides nothing: no switch from a failure report, no timeouts, no
    /// operator's switch; signals and pings still pass. With it again, the next report switches.
    @Test func withoutTheLeaseNothingIsDecided() {
        var h = MachineHarness()
        _ = h.join("a", connection: 1)
        _ = h.join("b", connection: 2)
        #expect(h.feed(.lease(held: false)) == [])
        let failed = #"{"type":"health","epoch":1,"provider":"p2p","media":"failed"}"#
        #expect(h.message("a", connection: 1, failed) == ["metric health", "write health a"])
        h.now = .seconds(60)  // past every participant's heartbeat timeout
        #expect(h.feed(.tick) == [])
        #expect(h.feed(.forceSwitch(Ticket(raw: 99), .relay)) == ["reply refused provider_unavailable"])
        #expect(h.message("b", connection: 2, #"{"type":"ping","t":1}"#) == ["send pong to b@2 #2"])
        _ = h.feed(.lease(held: true))
        h.now = .seconds(61)
        _ = h.message("a", connection: 1, #"{"type":"ping","t":2}"#)
        _ = h.message("b", connection: 2, #"{"type":"ping","t":2}"#)
        let effects = h.message("a", connection: 1, failed)
        #expect(effects.contains { $0.hasPrefix("write switch 1→") })
        #expect(h.machine.arbiter.epoch == 2)
    }

    @Test func drainClosesSocketsAndRefusesWaitingJoins() {
        var h = MachineHarness()
        _ = h.join("a", connection: 1)
        #expect(h.feed(.drain) == ["close @1 4000"])
    }
}
