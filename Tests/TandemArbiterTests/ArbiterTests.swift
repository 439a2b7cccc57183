import Testing
import TandemProtocol

@testable import TandemArbiter

let room = SessionID("room")!
let p1 = ParticipantID("p1")
let p2 = ParticipantID("p2")
let p3 = ParticipantID("p3")
let all = Set(ProviderName.allCases)

func config(_ enabled: Set<ProviderName> = [.p2p]) -> ArbiterConfig {
    var c = ArbiterConfig()
    c.enabled = enabled
    return c
}

func t(_ seconds: Double) -> Instant { .seconds(seconds) }

/// A session with `ids` joined in order at time 0, offering everything; its SFU room (when the SFU is
/// enabled) is ready, so switches to it wait on nothing.
func session(_ enabled: Set<ProviderName> = [.p2p], _ ids: [ParticipantID] = [p1, p2], scores: ProviderScores = ProviderScores()) -> SessionArbiter {
    var a = SessionArbiter(session: room, config: config(enabled))
    if enabled.contains(.sfu) { _ = a.sfuReadiness(true, now: t(0)) }
    for id in ids { _ = a.join(id, name: nil, offered: all, scores: scores, now: t(0)) }
    return a
}

func report(_ epoch: Int, _ provider: ProviderName = .p2p, _ media: MediaState = .connected, rtt: Double? = nil, loss: Double? = nil,
            jitter: Double? = nil, kbps: Double? = nil) -> HealthReport {
    HealthReport(epoch: epoch, provider: provider, media: media, rttMs: rtt, lossPct: loss, jitterMs: jitter, bitrateKbps: kbps)
}

@Suite("First joiner chooses the provider")
struct SelectionTests {
    struct Case: Sendable {
        var enabled: Set<ProviderName>
        var offered: Set<ProviderName>
        var scores: [ProviderName: Int]
        var expected: ProviderName?
    }

    static let cases: [Case] = [
        Case(enabled: [.p2p], offered: all, scores: [:], expected: .p2p),
        Case(enabled: all, offered: all, scores: [:], expected: .p2p),
        Case(enabled: all, offered: all, scores: [.p2p: 50], expected: .relay),
        Case(enabled: all, offered: all, scores: [.p2p: 10, .relay: 10], expected: .sfu),
        Case(enabled: all, offered: [.sfu], scores: [:], expected: .sfu),
        Case(enabled: [.p2p, .relay], offered: [.relay, .sfu], scores: [:], expected: .relay),
        Case(enabled: all, offered: all, scores: [.p2p: 70, .relay: 70, .sfu: 70], expected: .p2p),  // tie: fallback order
        Case(enabled: [.p2p], offered: [.relay, .sfu], scores: [:], expected: nil),
    ]

    @Test(arguments: cases)
    func chooses(_ c: Case) {
        let (offered, scores, expected) = (c.offered, c.scores, c.expected)
        var a = SessionArbiter(session: room, config: config(c.enabled))
        let decision = a.join(p1, name: "a", offered: offered, scores: ProviderScores(scores), now: t(0))
        if let expected {
            #expect(decision == .admitted(provider: expected, epoch: 1, polite: expected == .p2p ? false : true, actions: []))
        } else {
            #expect(decision == .rejected(ProtocolError(.providerUnavailable, "none of the offered providers is enabled on this server")))
        }
    }

    @Test func laterJoinersGetTheSameProviderAndEpochAndThePoliteRole() {
        var a = SessionArbiter(session: room, config: config([.p2p, .relay]), lastEpoch: 6)
        #expect(a.join(p1, name: nil, offered: all, scores: ProviderScores(), now: t(0)) == .admitted(provider: .p2p, epoch: 7, polite: false, actions: []))
        // The second joiner's scores no longer matter: the session has chosen.
        #expect(a.join(p2, name: nil, offered: all, scores: ProviderScores([.p2p: 0]), now: t(1)) == .admitted(provider: .p2p, epoch: 7, polite: true, actions: []))
        #expect(a.polite(for: p1) == false)
    }

    @Test func storeChoiceWins() {
        var a = SessionArbiter(session: room, config: config([.p2p, .relay]))
        // Another node chose relay at epoch 4 first.
        let d = a.join(p1, name: nil, offered: all, scores: ProviderScores(), now: t(0), current: (.relay, 4))
        #expect(d == .admitted(provider: .relay, epoch: 4, polite: true, actions: []))
    }

    @Test func politeRoleStaysOnePerPairAfterTheImpoliteSideLeaves() {
        var a = session()
        _ = a.leave(p1, reason: .left)
        // p2 (polite) is alone; the newcomer must be the impolite one.
        _ = a.join(p3, name: nil, offered: all, scores: ProviderScores(), now: t(1))
        #expect(a.polite(for: p2) == true)
        #expect(a.polite(for: p3) == false)
    }

    @Test func joinerWithoutTheCurrentProviderIsRefused() {
        var a = session([.p2p, .sfu], [p1])
        #expect(a.join(p2, name: nil, offered: [.sfu], scores: ProviderScores(), now: t(0)) == .rejected(ProtocolError(.providerUnavailable, "the session is on p2p, which this client does not offer")))
    }

    @Test func sameParticipantCannotJoinTwice() {
        var a = session([.p2p], [p1])
        guard case .rejected(let e) = a.join(p1, name: nil, offered: all, scores: ProviderScores(), now: t(0)) else { Issue.record(); return }
        #expect(e.code == .alreadyJoined)
    }
}

@Suite("Participant count")
struct CapacityTests {
    @Test func thirdJoinerMovesTheSessionToTheSFU() {
        var a = session([.p2p, .sfu])
        let d = a.join(p3, name: nil, offered: all, scores: ProviderScores(), now: t(2))
        #expect(d == .admitted(provider: .sfu, epoch: 2, polite: true, actions: [.switchProvider(to: .sfu, epoch: 2, previous: .p2p, reason: .join)]))
        #expect(a.provider == .sfu)
    }

    static let refusals: [(Set<ProviderName>, Set<ProviderName>)] = [
        ([.p2p], all),  // no SFU on the server
        ([.p2p, .sfu], [.p2p]),  // the joiner cannot use it
    ]

    @Test(arguments: refusals)
    func thirdJoinerIsRefusedWithoutAUsableSFU(enabled: Set<ProviderName>, offered: Set<ProviderName>) {
        var a = session(enabled)
        guard case .rejected(let e) = a.join(p3, name: nil, offered: offered, scores: ProviderScores(), now: t(2)) else { Issue.record(); return }
        #expect(e.code == .sessionFull)
        #expect(a.provider == .p2p && a.epoch == 1 && a.participants.count == 2)
    }

    @Test func maxParticipantsHoldsOnTheSFU() {
        var c = config([.sfu])
        c.maxParticipants = 3
        var a = SessionArbiter(session: room, config: c)
        for id in [p1, p2, p3] {
            guard case .admitted = a.join(id, name: nil, offered: all, scores: ProviderScores(), now: t(0)) else { Issue.record(); return }
        }
        guard case .rejected(let e) = a.join(ParticipantID("p4"), name: nil, offered: all, scores: ProviderScores(), now: t(0)) else { Issue.record(); return }
        #expect(e.code == .sessionFull)
    }
}

@Suite("Coordinated recovery")
struct RecoveryTests {
    @Test func failureMovesToTheNextProviderExactlyOnce() {
        var a = session([.p2p, .relay, .sfu])
        let first = a.health(p1, report(1, .p2p, .failed), now: t(5))
        #expect(first.contains(.switchProvider(to: .relay, epoch: 2, previous: .p2p, reason: .failure)))
        #expect(!first.contains { if case .adjustScore = $0 { true } else { false } }, "one report alone costs no score")
        // The peer saw the same failure at the same time: its report of epoch 1 moves nothing, and
        // corroborates the failure, which now costs p2p its score.
        #expect(a.health(p2, report(1, .p2p, .failed), now: t(5)) == [.adjustScore(.p2p, delta: -15)])
        #expect(a.health(p2, report(1, .p2p, .failed), now: t(6)) == [], "once")
        #expect(a.provider == .relay && a.epoch == 2)
    }

    // enabled, current, expected next
    static let orders: [(Set<ProviderName>, ProviderName, ProviderName)] = [
        ([.p2p], .p2p, .p2p),  // nothing else: restart at epoch + 1
        ([.p2p, .sfu], .p2p, .sfu),  // relay not enabled: skipped
        (all, .relay, .sfu),
        (all, .sfu, .sfu),  // last in the order
    ]

    @Test(arguments: orders)
    func fallbackOrder(enabled: Set<ProviderName>, current: ProviderName, expected: ProviderName) {
        var a = SessionArbiter(session: room, config: config(enabled))
        _ = a.sfuReadiness(true, now: t(0))
        _ = a.join(p1, name: nil, offered: all, scores: ProviderScores(), now: t(0), current: (current, 3))
        let actions = a.health(p1, report(3, current, .failed), now: t(1))
        #expect(actions.contains(.switchProvider(to: expected, epoch: 4, previous: current, reason: .failure)))
    }

    @Test func staleReportsAreIgnored() {
        var a = session([.p2p, .relay])
        _ = a.forceSwitch(to: .relay, now: t(1))
        #expect(a.health(p1, report(1, .p2p, .failed), now: t(2)) == [])
        #expect(a.health(p1, report(2, .p2p, .failed), now: t(2)) == [])  // right epoch, wrong provider
        #expect(a.health(p1, report(9, .relay, .failed), now: t(2)) == [])  // an epoch from the future
        #expect(a.epoch == 2)
    }

    @Test func interleavedFailuresAndJoinStillSwitchOnce() {
        // p1 fails, p3 joins the now-sfu session, p2's late failure for epoch 1 arrives last.
        var a = session([.p2p, .sfu])
        var switches = 0
        for step in 0..<3 {
            let actions: [ArbiterAction]
            switch step {
            case 0: actions = a.health(p1, report(1, .p2p, .failed), now: t(1))
            case 1:
                guard case .admitted(let p, let e, _, let acts) = a.join(p3, name: nil, offered: all, scores: ProviderScores(), now: t(1)) else {
                    Issue.record()
                    return
                }
                #expect(p == .sfu && e == 2)
                actions = acts
            default: actions = a.health(p2, report(1, .p2p, .failed), now: t(1))
            }
            switches += actions.filter { if case .switchProvider = $0 { true } else { false } }.count
        }
        #expect(switches == 1)
        #expect(a.epoch == 2)
    }

    @Test func connectedRaisesTheScoreOncePerParticipantPerEpoch() {
        var a = session()
        #expect(a.health(p1, report(1), now: t(1)).contains(.adjustScore(.p2p, delta: 5)))
        #expect(!a.health(p1, report(1), now: t(2)).contains(.adjustScore(.p2p, delta: 5)))
        #expect(a.health(p2, report(1), now: t(2)).contains(.adjustScore(.p2p, delta: 5)))
        _ = a.health(p1, report(1, .p2p, .failed), now: t(3))  // restart at epoch 2
        #expect(a.health(p1, report(2), now: t(4)).contains(.adjustScore(.p2p, delta: 5)))
    }

    @Test func scoresClamp() {
        var s = ProviderScores([.p2p: 98])
        s.apply(5, to: .p2p)
        #expect(s[.p2p] == 100)
        s = ProviderScores([.relay: 10])
        s.apply(-15, to: .relay)
        #expect(s[.relay] == 0)
    }
}

/// What one participant's reports can do to a session and to the scores every later session starts
/// from: failure switches are spaced and bounded, scores pay only for corroborated failures, and one
/// session moves a score by at most `sessionScoreCap`.
@Suite("Failure storms and poisoned scores")
struct FailureStormTests {
    func switches(_ actions: [ArbiterAction]) -> [ArbiterAction] {
        actions.filter { if case .switchProvider = $0 { true } else { false } }
    }

    func scoreChange(_ actions: [ArbiterAction]) -> Int {
        actions.reduce(0) { if case let .adjustScore(_, d) = $1 { $0 + d } else { $0 } }
    }

    /// One participant alone reports `failed` on every epoch, as fast as it can, for a minute.
    @Test func aLoneParticipantsStormIsSpacedBoundedAndCostsNoScore() {
        var a = session([.p2p, .relay], [p1])
        var switchTimes: [Double] = []
        var alerts: [ArbiterAction] = []
        var score = 0
        for step in 0..<600 {
            let now = Double(step) * 0.1
            var actions = a.health(p1, report(a.epoch, a.provider!, .failed), now: t(now))
            if step % 10 == 0 { actions += a.tick(now: t(now)) }
            switchTimes += switches(actions).map { _ in now }
            alerts += actions.filter { if case .alert(.switchLimit, _, _) = $0 { true } else { false } }
            score += scoreChange(actions)
        }
        // The first at once; then at most one per cool-down; six in all.
        #expect(switchTimes.first == 0)
        #expect(switchTimes.count == ArbiterConfig().failureSwitchLimit)
        for (earlier, later) in zip(switchTimes, switchTimes.dropFirst()) { #expect(later - earlier >= 2) }
        #expect(alerts == [.alert(.switchLimit, p1, value: 6)], "said once")
        #expect(score == 0, "nobody corroborated any of it")
        // Past the window the session can move again.
        #expect(switches(a.health(p1, report(a.epoch, a.provider!, .failed), now: t(700))).count == 1)
    }

    // Who says the epoch failed, and what it costs the provider.
    static let witnesses: [(String, Int)] = [
        ("one participant", 0),
        ("both participants", -15),
        ("the server's relay leg", -15),
        ("one participant twice", 0),
    ]

    @Test(arguments: witnesses)
    func aFailureCostsTheScoreOnlyWhenCorroborated(who: String, cost: Int) {
        var a = session([.p2p, .relay])
        var actions = a.health(p1, report(1, .p2p, .failed), now: t(1))
        switch who {
        case "both participants": actions += a.health(p2, report(1, .p2p, .failed), now: t(1.5))
        case "the server's relay leg":
            a = session([.p2p, .relay])
            actions = a.mediaFailed(p1, epoch: 1, provider: .p2p, now: t(1))
        case "one participant twice": actions += a.health(p1, report(1, .p2p, .failed), now: t(1.5))
        default: break
        }
        #expect(switches(actions).count == 1)
        #expect(scoreChange(actions) == cost)
    }

    /// A failure inside the cool-down waits for its end, and is dropped if the media recovered first.
    @Test func aFailureInsideTheCoolDownWaitsAndAConnectedReportCancelsIt() {
        var a = session([.p2p, .relay])
        #expect(switches(a.health(p1, report(1, .p2p, .failed), now: t(10))).count == 1)
        #expect(switches(a.health(p1, report(2, .relay, .failed), now: t(10.5))) == [])
        #expect(a.deferredFailure?.by == p1)
        #expect(switches(a.tick(now: t(11))) == [])
        #expect(switches(a.tick(now: t(12))) == [.switchProvider(to: .relay, epoch: 3, previous: .relay, reason: .failure)])

        #expect(switches(a.health(p2, report(3, .relay, .failed), now: t(12.5))) == [])
        _ = a.health(p2, report(3, .relay, .connected), now: t(13))
        #expect(a.deferredFailure == nil)
        #expect(switches(a.tick(now: t(20))) == [])
        #expect(a.epoch == 3)
    }

    /// A deferred failure of an epoch the session has left (an operator moved it, or another node) is dropped.
    @Test(arguments: ["operator", "another node"])
    func aDeferredFailureOfAnOldEpochIsDropped(mover: String) {
        var a = session([.p2p, .relay])
        _ = a.health(p1, report(1, .p2p, .failed), now: t(10))
        _ = a.health(p1, report(2, .relay, .failed), now: t(10.5))
        #expect(a.deferredFailure != nil)
        if mover == "operator" { _ = a.forceSwitch(to: .p2p, now: t(11)) } else { _ = a.adopt(provider: .p2p, epoch: 3, now: t(11)) }
        #expect(a.deferredFailure == nil)
        #expect(switches(a.tick(now: t(13))) == [])
        #expect(a.epoch == 3)
    }

    /// However often a session connects and fails, it moves any one score by at most the cap, net.
    @Test func oneSessionMovesAScoreByAtMostTheCap() {
        var a = session([.p2p, .relay])
        var net: [ProviderName: Int] = [:]
        func apply(_ actions: [ArbiterAction]) {
            for case let .adjustScore(provider, delta) in actions { net[provider, default: 0] += delta }
            #expect(net.values.allSatisfy { abs($0) <= 15 }, "\(net)")
        }
        for round in 0..<20 {
            let now = Double(round) * 10
            let (e, p) = (a.epoch, a.provider!)
            for id in [p1, p2] { apply(a.health(id, report(e, p, .connected), now: t(now))) }
            for id in [p1, p2] { apply(a.health(id, report(e, p, .failed), now: t(now + 1))) }
        }
        #expect(net.values.contains(-15), "the corroborated failures were charged up to the cap: \(net)")

        // Connected reports alone, on every restart: +5 each, until the cap.
        var b = session([.p2p], [p1, p2])
        var total = 0
        for round in 0..<10 {
            let e = b.epoch
            for id in [p1, p2] { total += scoreChange(b.health(id, report(e, .p2p, .connected), now: t(Double(round) * 10))) }
            _ = b.health(p1, report(e, .p2p, .failed), now: t(Double(round) * 10 + 5))  // an uncorroborated restart
        }
        #expect(total == 15)
    }
}

@Suite("Quality switching")
struct QualitySwitchTests {
    func bad(_ epoch: Int = 1) -> HealthReport { report(epoch, rtt: 600, loss: 1, jitter: 10) }
    func good(_ epoch: Int = 1) -> HealthReport { report(epoch, rtt: 50, loss: 0, jitter: 5) }

    func switches(_ actions: [ArbiterAction]) -> [ArbiterAction] {
        actions.filter { if case .switchProvider = $0 { true } else { false } }
    }

    @Test func sustainedBadQualityMovesToTheSFU() {
        var a = session([.p2p, .sfu])
        let start = 60.0  // past the cool-down of the first join
        #expect(switches(a.health(p1, bad(), now: t(start))) == [])
        #expect(switches(a.health(p1, bad(), now: t(start + 5))) == [])
        #expect(switches(a.health(p1, bad(), now: t(start + 10))) == [.switchProvider(to: .sfu, epoch: 2, previous: .p2p, reason: .quality)])
    }

    static let metrics: [(String, HealthReport)] = [
        ("rtt", report(1, rtt: 401)), ("loss", report(1, loss: 8.5)), ("jitter", report(1, jitter: 61)),
    ]

    @Test(arguments: metrics)
    func eachMetricCounts(_ name: String, _ r: HealthReport) {
        var a = session([.p2p, .sfu])
        for i in 0..<3 { _ = a.health(p2, r, now: t(60 + Double(i))) }
        #expect(a.provider == .sfu, "\(name)")
    }

    @Test func aGoodReportResetsTheCount() {
        var a = session([.p2p, .sfu])
        let sequence = [bad(), bad(), good(), bad(), bad()]
        for (i, r) in sequence.enumerated() { #expect(switches(a.health(p1, r, now: t(60 + Double(i)))) == []) }
        #expect(a.provider == .p2p)
    }

    @Test func coolDownFollowsEverySwitch() {
        var a = session([.p2p, .relay, .sfu])
        _ = a.health(p1, report(1, .p2p, .failed), now: t(100))  // → relay at 100 s
        for i in 0..<5 { #expect(switches(a.health(p1, bad(2).with(provider: .relay), now: t(101 + Double(i)))) == []) }
        // After 30 s the streak (still counting) is allowed to act.
        #expect(switches(a.health(p1, bad(2).with(provider: .relay), now: t(131))) == [.switchProvider(to: .sfu, epoch: 3, previous: .relay, reason: .quality)])
    }

    @Test func theServersMeasurementsCountButDoNotReportMedia() {
        var a = session([.p2p, .sfu])
        _ = a.health(p1, good(), now: t(59))
        #expect(a.participants[p1]?.media == .connected)
        // Measurements of another epoch or provider are ignored: three of them would otherwise switch.
        for i in 0..<3 {
            #expect(a.measured(p1, report(0, loss: 20), now: t(50 + Double(i))) == [])
            #expect(a.measured(p1, report(1, .relay, loss: 20), now: t(50 + Double(i))) == [])
            #expect(a.measured(p3, report(1, loss: 20), now: t(50 + Double(i))) == [])
        }
        #expect(a.participants[p1]?.qualityLevel != .poor)
        // The relay measured heavy loss on p1's leg three times: the session moves for quality.
        #expect(switches(a.measured(p1, report(1, .p2p, .connecting, loss: 20), now: t(60))) == [])
        #expect(a.participants[p1]?.media == .connected, "a measurement is not a media state")
        #expect(a.participants[p1]?.lastHealthAt == t(59), "nor a sign of life")
        #expect(a.participants[p1]?.qualityLevel == .poor)
        _ = a.measured(p1, report(1, loss: 20), now: t(61))
        #expect(switches(a.measured(p1, report(1, loss: 20), now: t(62))) == [.switchProvider(to: .sfu, epoch: 2, previous: .p2p, reason: .quality)])
    }

    @Test func theServersFindingOfAFailureMovesTheSessionWithoutStandingForAReport() {
        var a = session([.p2p, .relay])
        _ = a.health(p1, good(), now: t(5))
        #expect(a.mediaFailed(p1, epoch: 0, provider: .p2p, now: t(6)) == [], "an old epoch")
        #expect(a.mediaFailed(p1, epoch: 1, provider: .relay, now: t(6)) == [], "another provider")
        #expect(a.mediaFailed(p3, epoch: 1, provider: .p2p, now: t(6)) == [], "no such participant")
        let actions = a.mediaFailed(p1, epoch: 1, provider: .p2p, now: t(7))
        #expect(switches(actions) == [.switchProvider(to: .relay, epoch: 2, previous: .p2p, reason: .failure)])
        #expect(actions.contains(.adjustScore(.p2p, delta: ProviderScores.onFailure)))
        #expect(a.participants[p1]?.lastHealthAt == t(5), "not a sign of life")
        #expect(a.participants[p1]?.lastReport == good(), "nor the participant's report")
        // Exactly once: the other participant's late report of the same failure does not move it again.
        #expect(switches(a.health(p2, report(1, .p2p, .failed), now: t(8))) == [])
    }

    @Test func noTargetNoSwitch() {
        var a = session([.p2p])
        for i in 0..<10 { #expect(switches(a.health(p1, bad(), now: t(60 + Double(i)))) == []) }
    }

    @Test func alreadyOnTheTargetNoSwitch() {
        var a = SessionArbiter(session: room, config: config([.sfu]))
        _ = a.join(p1, name: nil, offered: all, scores: ProviderScores(), now: t(0))
        for i in 0..<10 { #expect(switches(a.health(p1, bad().with(provider: .sfu), now: t(60 + Double(i)))) == []) }
    }
}

extension HealthReport {
    func with(provider: ProviderName) -> HealthReport {
        var r = self
        r.provider = provider
        return r
    }
}

@Suite("Quality levels, alerts and the video ladder")
struct FeedbackTests {
    // rtt, loss, jitter, expected level
    static let levels: [(Double, Double, Double, QualityLevel)] = [
        (20, 0, 2, .excellent), (150, 1, 20, .excellent), (300, 3, 30, .good), (400, 8, 60, .poor), (800, 20, 100, .lost),
    ]

    @Test(arguments: levels)
    func scoreLevels(rtt: Double, loss: Double, jitter: Double, level: QualityLevel) {
        #expect(QualityScore.level(for: QualityScore.score(rttMs: rtt, lossPct: loss, jitterMs: jitter)) == level)
    }

    @Test func levelsDropFastAndRiseSlowly() {
        var a = session()
        func quality(_ r: HealthReport, _ time: Double) -> QualityLevel? {
            for case let .quality(id, _, level) in a.health(p1, r, now: t(time)) where id == p1 { return level }
            return nil
        }
        #expect(quality(report(1, rtt: 20, loss: 0, jitter: 1), 1) == .excellent)  // first level is announced
        #expect(quality(report(1, rtt: 20, loss: 0, jitter: 1), 2) == nil)  // unchanged: silent
        #expect(quality(report(1, rtt: 800, loss: 20, jitter: 100), 3) == .lost)  // down at once
        #expect(quality(report(1, rtt: 20, loss: 0, jitter: 1), 4) == nil)  // up: wait
        #expect(quality(report(1, rtt: 300, loss: 3, jitter: 30), 5) == nil)
        #expect(quality(report(1, rtt: 20, loss: 0, jitter: 1), 6) == .good)  // three better reports; the worst of them
        #expect(quality(report(1, .p2p, .failed), 7) == .lost)
    }

    @Test func alertsFireOnceUntilTheConditionClears() {
        var a = session()
        func alerts(_ r: HealthReport, _ time: Double) -> [ArbiterAction] {
            a.health(p2, r, now: t(time)).filter { if case .alert = $0 { true } else { false } }
        }
        #expect(alerts(report(1, rtt: 350), 1) == [.alert(.highLatency, p2, value: 350)])
        #expect(alerts(report(1, rtt: 360), 2) == [])
        #expect(alerts(report(1, rtt: 100), 3) == [])
        #expect(alerts(report(1, rtt: 380, loss: 6), 4) == [.alert(.highLatency, p2, value: 380), .alert(.packetLoss, p2, value: 6)])
        #expect(alerts(report(1, kbps: 90), 5) == [.alert(.lowBandwidth, p2, value: 90)])
        #expect(alerts(report(1, .p2p, .connecting, kbps: 10), 6) == [])  // not connected yet: not a bandwidth problem
        #expect(alerts(report(1, jitter: 55), 7) == [.alert(.highJitter, p2, value: 55)])
        #expect(alerts(report(1, jitter: 58), 8) == [])
    }

    // bitrate and loss per report, expected recommendation after each (nil: none sent)
    static let ladders: [([(Double, Double)], [Int?])] = [
        ([(2000, 0)], [nil]),
        ([(500, 0)], [360]),
        ([(500, 0), (2000, 0), (2000, 0), (2000, 0)], [360, nil, nil, 480]),  // up one rung after 3 good reports
        ([(100, 0), (2000, 0), (2000, 0), (2000, 0), (2000, 0), (2000, 0), (2000, 0)], [240, nil, nil, 360, nil, nil, 480]),
        ([(2000, 15)], [480]),  // heavy loss takes one more rung
        ([(700, 0), (650, 0), (300, 0)], [480, nil, 360]),
        ([(500, 0), (2000, 0), (100, 0)], [360, nil, 240]),  // a drop restarts the climb
    ]

    @Test(arguments: ladders)
    func videoLadder(reports: [(Double, Double)], expected: [Int?]) {
        var ladder = VideoLadder()
        let got = reports.map { ladder.observe(bitrateKbps: $0.0, lossPct: $0.1, upgradeReports: 3)?.maxHeight }
        #expect(got == expected)
    }

    @Test func videoRecommendationGoesToTheReporter() {
        var a = session()
        #expect(a.health(p2, report(1, kbps: 250), now: t(1)).contains(.video(p2, maxHeight: 240, reason: "bandwidth")))
    }
}

@Suite("Liveness")
struct LivenessTests {
    @Test func dropThenTimeout() {
        var a = session()
        #expect(a.disconnected(p2, now: t(1)) == [.peerState(p2, .reconnecting)])
        #expect(a.disconnected(p2, now: t(1)) == [])
        a.activity(p1, now: t(15.5))
        #expect(a.tick(now: t(15.9)).filter { if case .removeParticipant = $0 { true } else { false } } == [])
        #expect(a.tick(now: t(16)).contains(.removeParticipant(p2, reason: .timeout)))
        #expect(a.participants[p2] == nil)
    }

    @Test func resumeBeforeTheTimeoutKeepsTheParticipant() {
        var a = session()
        _ = a.disconnected(p2, now: t(1))
        #expect(a.resumed(p2, now: t(10)) == [.peerState(p2, .active)])
        a.activity(p1, now: t(19))
        #expect(a.tick(now: t(20)).filter { if case .removeParticipant = $0 { true } else { false } } == [])
    }

    @Test func silentOpenSocketTimesOutToo() {
        var a = session()
        a.activity(p1, now: t(14))
        let actions = a.tick(now: t(15))
        #expect(actions.contains(.removeParticipant(p2, reason: .timeout)))
        #expect(!actions.contains(.removeParticipant(p1, reason: .timeout)))
    }

    @Test func stalePeerIsFlaggedOnceUntilItReports() {
        var a = session()
        a.activity(p1, now: t(14))
        a.activity(p2, now: t(14))
        #expect(a.tick(now: t(15)) == [.alert(.stalePeer, p1, value: 15000), .alert(.stalePeer, p2, value: 15000)])
        a.activity(p1, now: t(16))
        a.activity(p2, now: t(16))
        #expect(a.tick(now: t(17)) == [])
        _ = a.health(p1, report(1), now: t(18))
        a.activity(p1, now: t(32))
        a.activity(p2, now: t(32))
        #expect(a.tick(now: t(33)) == [.alert(.stalePeer, p1, value: 15000)])
    }

    @Test func lastLeaveEndsTheSessionAndTheNextJoinChoosesAgainAtANewEpoch() {
        var a = session([.p2p, .relay])
        #expect(a.leave(p1, reason: .left) == [.removeParticipant(p1, reason: .left)])
        #expect(a.leave(p2, reason: .left) == [.removeParticipant(p2, reason: .left), .sessionEnded])
        #expect(a.leave(p2, reason: .left) == [])
        #expect(a.join(p3, name: nil, offered: [.relay], scores: ProviderScores(), now: t(1)) == .admitted(provider: .relay, epoch: 2, polite: true, actions: []))
    }
}

@Suite("Operator switch and other nodes")
struct AdminTests {
    @Test func forcedSwitchIgnoresTheCoolDown() {
        var a = session([.p2p, .relay])
        #expect(a.forceSwitch(to: .relay, now: t(1)) == .success([.switchProvider(to: .relay, epoch: 2, previous: .p2p, reason: .admin)]))
        #expect(a.forceSwitch(to: .p2p, now: t(2)) == .success([.switchProvider(to: .p2p, epoch: 3, previous: .relay, reason: .admin)]))
    }

    @Test func forcedSwitchChecks() {
        var a = session([.p2p, .sfu], [p1, p2])
        guard case .failure(let e1) = a.forceSwitch(to: .relay, now: t(1)) else { Issue.record(); return }
        #expect(e1.code == .providerUnavailable)
        var b = session([.p2p, .sfu], [p1, p2, p3])  // on sfu after the third joiner
        guard case .failure(let e2) = b.forceSwitch(to: .p2p, now: t(1)) else { Issue.record(); return }
        #expect(e2.code == .sessionFull)
        var c = SessionArbiter(session: room, config: config([.p2p]))
        guard case .failure(let e3) = c.forceSwitch(to: .p2p, now: t(1)) else { Issue.record(); return }
        #expect(e3.code == .notJoined)
    }

    @Test func adoptFollowsANewerEpochOnly() {
        var a = session([.p2p, .relay])
        let newer = a.adopt(provider: .relay, epoch: 5, now: t(1))
        let same = a.adopt(provider: .p2p, epoch: 5, now: t(1))
        #expect(newer && !same)
        #expect(a.provider == .relay && a.epoch == 5)
    }
}
