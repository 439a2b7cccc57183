import Testing
import TandemProtocol

@testable import TandemArbiter

/// The arbiter and the SFU's room: a switch to the SFU never waits on the service once the room is
/// ready, waits for it (without moving the epoch) when it is not, and falls back when the service fails.
@Suite("Switching to the SFU waits for its room")
struct SFUArbiterTests {
    static let bad = report(1, rtt: 600, loss: 1, jitter: 10)
    static let alerting = report(1, rtt: 350, loss: 1, jitter: 10)  // past the alert threshold only

    /// p1 and p2 on p2p, the SFU enabled but its room not made.
    func unprepared(_ policy: SFUPreparation = .onDemand, enabled: Set<ProviderName> = [.p2p, .sfu]) -> SessionArbiter {
        var c = config(enabled)
        c.sfuPreparation = policy
        var a = SessionArbiter(session: room, config: c)
        for id in [p1, p2] { _ = a.join(id, name: nil, offered: all, scores: ProviderScores(), now: t(0)) }
        return a
    }

    func switches(_ actions: [ArbiterAction]) -> [ArbiterAction] {
        actions.filter { if case .switchProvider = $0 { true } else { false } }
    }

    @Test func aQualitySwitchWaitsForTheRoomThenHappensOnce() {
        var a = unprepared()
        #expect(!a.health(p1, Self.bad, now: t(40)).contains(.prepareSFU))
        #expect(!a.health(p1, Self.bad, now: t(45)).contains(.prepareSFU))
        // The third bad report wants the switch: the room is asked for, the epoch stays.
        let third = a.health(p1, Self.bad, now: t(50))
        #expect(third.contains(.prepareSFU) && switches(third) == [])
        #expect(a.pendingSFU == SessionArbiter.PendingSwitch(reason: .quality, by: p1))
        #expect(a.epoch == 1 && a.provider == .p2p)
        // More bad reports, from either side, neither ask again nor switch.
        #expect(switches(a.health(p1, Self.bad, now: t(55))) == [])
        #expect(a.health(p2, Self.bad, now: t(55)).contains(.prepareSFU) == false)
        #expect(a.sfuReadiness(true, now: t(56)) == [.switchProvider(to: .sfu, epoch: 2, previous: .p2p, reason: .quality)])
        #expect(a.pendingSFU == nil && a.provider == .sfu)
        #expect(a.sfuReadiness(true, now: t(57)) == [])
    }

    @Test func aReadyRoomMeansAnImmediateSwitch() {
        var a = unprepared()
        _ = a.sfuReadiness(true, now: t(1))
        _ = a.health(p1, Self.bad, now: t(40))
        _ = a.health(p1, Self.bad, now: t(45))
        #expect(switches(a.health(p1, Self.bad, now: t(50))) == [.switchProvider(to: .sfu, epoch: 2, previous: .p2p, reason: .quality)])
    }

    @Test func aFailedServiceLeavesTheSessionWhereItIsWithOneAlert() {
        var a = unprepared()
        for time in [40.0, 45, 50] { _ = a.health(p1, Self.bad, now: t(time)) }
        #expect(a.sfuFailed(status: 500, now: t(51)) == [.alert(.sfuUnavailable, p1, value: 500)])
        #expect(a.provider == .p2p && a.epoch == 1 && a.pendingSFU == nil)
        // Within the retry delay nothing is asked for, and the alert is not repeated.
        #expect(a.health(p1, Self.bad, now: t(55)).contains(.prepareSFU) == false)
        // Another failure (a joiner's token, say) says nothing new, but starts the delay again.
        #expect(a.sfuFailed(status: 500, now: t(60)) == [])
        #expect(!a.health(p1, Self.bad, now: t(85)).contains(.prepareSFU))
        // After it, the next bad report tries again.
        #expect(a.health(p1, Self.bad, now: t(91)).contains(.prepareSFU))
    }

    @Test func aFailureWaitsForTheRoomOnlyOnceHoweverManyReportIt() {
        var a = unprepared(enabled: [.p2p, .sfu])
        let first = a.health(p1, report(1, .p2p, .failed), now: t(1))
        #expect(first.contains(.prepareSFU) && switches(first) == [])
        // The second report moves nothing and asks for nothing; it corroborates the failure, which costs p2p.
        let second = a.health(p2, report(1, .p2p, .failed), now: t(1))
        #expect(switches(second) == [] && !second.contains(.prepareSFU) && second.contains(.adjustScore(.p2p, delta: -15)))
        #expect(a.sfuReadiness(true, now: t(2)) == [.switchProvider(to: .sfu, epoch: 2, previous: .p2p, reason: .failure)])
    }

    struct Fallback: Sendable {
        var enabled: Set<ProviderName>
        var order: [ProviderName]
        var current: ProviderName
        /// Where a failed session goes when the SFU fails too.
        var expected: ProviderName
    }

    @Test(arguments: [
        Fallback(enabled: [.p2p, .sfu], order: [.p2p, .relay, .sfu], current: .p2p, expected: .p2p),
        Fallback(enabled: [.p2p, .relay, .sfu], order: [.p2p, .sfu, .relay], current: .p2p, expected: .relay),
    ])
    func aFailureTheSFUCannotTakeFallsBack(_ f: Fallback) {
        let (current, expected) = (f.current, f.expected)
        var c = config(f.enabled)
        c.fallbackOrder = f.order
        var a = SessionArbiter(session: room, config: c)
        for id in [p1, p2] { _ = a.join(id, name: nil, offered: all, scores: ProviderScores(), now: t(0)) }
        #expect(a.provider == current)
        _ = a.health(p1, report(1, current, .failed), now: t(1))
        #expect(
            a.sfuFailed(status: 0, now: t(2)) == [
                .alert(.sfuUnavailable, p1, value: 0), .switchProvider(to: expected, epoch: 2, previous: current, reason: .failure),
            ])
        // Soon after (once the failure cool-down is over), another failure does not wait for the service
        // that just failed.
        #expect(switches(a.health(p2, report(2, expected, .failed), now: t(4))).count == 1)
    }

    @Test(arguments: [
        (SFUPreparation.sessionStart, [true, false, false]),
        (.qualityTrend, [false, false, true]),
        (.onDemand, [false, false, false]),
    ])
    func whenTheRoomIsMadeAhead(policy: SFUPreparation, expected: [Bool]) {
        var c = config([.p2p, .sfu])
        c.sfuPreparation = policy
        var a = SessionArbiter(session: room, config: c)
        guard case .admitted(_, _, _, let first) = a.join(p1, name: nil, offered: all, scores: ProviderScores(), now: t(0)),
            case .admitted(_, _, _, let second) = a.join(p2, name: nil, offered: all, scores: ProviderScores(), now: t(0))
        else { Issue.record(); return }
        // A session start, a second joiner, a first report past the alert threshold.
        let trend = a.health(p1, Self.alerting, now: t(5))
        #expect([first, second, trend].map { $0.contains(.prepareSFU) } == expected)
    }

    @Test func aRefusedFirstJoinerLeavesNothingWaiting() {
        var c = config([.p2p, .relay, .sfu])
        c.sfuPreparation = .sessionStart
        var a = SessionArbiter(session: room, config: c)
        // Another node put the session on relay; a joiner without relay is refused.
        guard case .rejected = a.join(p1, name: nil, offered: [.p2p, .sfu], scores: ProviderScores(), now: t(0), current: (.relay, 1)) else {
            Issue.record()
            return
        }
        guard case .admitted(_, _, _, let actions) = a.join(p2, name: nil, offered: all, scores: ProviderScores(), now: t(1), current: (.relay, 1))
        else { Issue.record(); return }
        #expect(actions.contains(.prepareSFU))
    }

    @Test func aJoinerWhoLandsOnTheSFUNeedsItsRoomFirst() {
        var a = unprepared()
        #expect(a.joinNeedsSFU(offered: all))
        #expect(!a.joinNeedsSFU(offered: [.p2p]))  // it will be refused instead
        guard case .rejected(let e) = a.join(p3, name: nil, offered: all, scores: ProviderScores(), now: t(1)) else { Issue.record(); return }
        #expect(e.code == .providerUnavailable && a.participants.count == 2)
        _ = a.sfuReadiness(true, now: t(2))
        guard case .admitted(.sfu, 2, _, _) = a.join(p3, name: nil, offered: all, scores: ProviderScores(), now: t(2)) else { Issue.record(); return }
        #expect(a.joinNeedsSFU(offered: all))  // on the SFU, every joiner needs a token
        #expect(!a.joinNeedsSFU(offered: [.p2p]))  // but one that will be refused does not
        var fresh = SessionArbiter(session: room, config: config([.p2p, .sfu]))
        #expect(fresh.joinNeedsSFU(offered: all, chosen: .sfu) && !fresh.joinNeedsSFU(offered: all, chosen: .p2p))
        _ = fresh.join(p1, name: nil, offered: all, scores: ProviderScores(), now: t(0))
    }

    @Test func anOperatorsSwitchNeedsTheRoom() {
        var a = unprepared()
        guard case .failure(let e) = a.forceSwitch(to: .sfu, now: t(1)) else { Issue.record(); return }
        #expect(e.code == .providerUnavailable)
        _ = a.sfuReadiness(true, now: t(1))
        #expect(a.forceSwitch(to: .sfu, now: t(1)) == .success([.switchProvider(to: .sfu, epoch: 2, previous: .p2p, reason: .admin)]))
    }

    @Test func theLastLeaveForgetsTheRoom() {
        var a = unprepared()
        _ = a.sfuReadiness(true, now: t(1))
        _ = a.leave(p1, reason: .left)
        #expect(a.leave(p2, reason: .left).contains(.sessionEnded))
        #expect(!a.sfuReady)
    }
}
