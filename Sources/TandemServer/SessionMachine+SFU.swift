import Logging
import TandemArbiter
import TandemProtocol
import TandemSFU
import TandemStore

/// The session's SFU room. The arbiter says when it is wanted (`prepareSFU`); the room and a token per
/// participant are then made in the background (``SFUCommand/prepare(attempt:room:missing:maxParticipants:expiresAt:)``),
/// and the arbiter hears whether a switch to the SFU would wait (`sfuReadiness`) or the service failed
/// (`sfuFailed`). The session never waits for the service: a join that lands on the SFU, and an
/// operator's switch to it, wait as `parkedJoin` and `switchWaiters` while the session's other inputs go
/// on, and are settled when a preparation ends.
extension SessionMachine {
    func sfuAccess(for id: ParticipantID) -> SFUAccess? {
        guard let name = env.sfuName, let room = sfuRoom, let token = sfuTokens[id] else { return nil }
        return SFUAccess(provider: name, url: room.url, token: token)
    }

    /// Participants without a token, the waiting joiner's included.
    private func withoutToken() -> [ParticipantID] {
        (arbiter.order + (parkedJoin.map { [$0.id] } ?? [])).filter { sfuTokens[$0] == nil }
    }

    /// Everybody holds a token (no allocation: this runs after every input).
    private var everyoneHasAToken: Bool { arbiter.order.allSatisfy { sfuTokens[$0] != nil } }

    /// The room exists and every participant, and `joining`, holds a token for it.
    func sfuReady(joining: ParticipantID? = nil) -> Bool {
        sfuRoom != nil && everyoneHasAToken && joining.map { sfuTokens[$0] != nil } ?? true
    }

    /// Starts making what is missing in the background, unless that is under way already.
    mutating func startSFU() {
        guard env.sfuName != nil, sfuPreparing == nil, !closed else { return }
        let missing = withoutToken()
        guard sfuRoom == nil || !missing.isEmpty else { return }
        sfuAttempts += 1
        sfuPreparing = sfuAttempts
        // Daily's rooms hold at most 200.
        let maxParticipants = min(config.arbiter.maxParticipants, 200)
        let expiresAt = wallMs / 1000 + Int64(config.sfu?.roomTTL.components.seconds ?? 86_400)
        out.append(.sfu(.prepare(attempt: sfuAttempts, room: sfuRoom, missing: missing, maxParticipants: maxParticipants, expiresAt: expiresAt)))
    }

    /// Once no preparation is under way: what waited for the service goes on, or hears that it failed,
    /// or a preparation starts for it; then the joins queued behind a settled join go.
    mutating func settleSFUWaiters() {
        guard sfuPreparing == nil, !closed else { return }
        if let joining = parkedJoin {
            let stillNeeded = arbiter.joinNeedsSFU(offered: joining.offered, chosen: joining.current?.name)
            if !stillNeeded || sfuReady(joining: joining.id) {
                parkedJoin = nil
                finishJoin(joining.arrival.ticket, admit(joining))
            } else if let failure = lastSFUFailure, failure.attempt > joining.since {
                parkedJoin = nil
                sfuTokens[joining.id] = nil
                finishJoin(joining.arrival.ticket, .rejected(ProtocolError(.providerUnavailable, "the SFU service failed: \(failure.error)")))
            } else {
                startSFU()
            }
        }
        if !switchWaiters.isEmpty, !closed {
            if sfuReady() || arbiter.provider == .sfu {
                let waiters = switchWaiters
                switchWaiters = []
                for waiter in waiters { forceSwitch(to: .sfu, waiter.ticket) }
            } else {
                var waiting: [(since: Int, ticket: Ticket)] = []
                for waiter in switchWaiters {
                    if let failure = lastSFUFailure, failure.attempt > waiter.since {
                        out.append(.replySwitch(waiter.ticket, .failure(ProtocolError(.providerUnavailable, "the SFU service failed: \(failure.error)"))))
                    } else {
                        waiting.append(waiter)
                    }
                }
                switchWaiters = waiting
                if !switchWaiters.isEmpty { startSFU() }
            }
        }
        // The next queued join starts; it may read the store first, and the rest wait for it.
        if parkedJoin == nil, preparing == nil, !closed, !queuedJoins.isEmpty {
            startJoin(queuedJoins.removeFirst())
        }
    }

    /// The live session closed: a waiting join asks the hub again (a new session), a waiting switch has
    /// nothing to move.
    mutating func releaseSFUWaiters() {
        if let joining = parkedJoin { out.append(.replyJoin(joining.arrival.ticket, .retry)) }
        parkedJoin = nil
        if let waiting = preparing { out.append(.replyJoin(waiting.arrival.ticket, .retry)) }
        preparing = nil
        for arrival in queuedJoins { out.append(.replyJoin(arrival.ticket, .retry)) }
        queuedJoins = []
        for waiter in switchWaiters { out.append(.replySwitch(waiter.ticket, .failure(ProtocolError(.notJoined, "the session has ended")))) }
        switchWaiters = []
    }

    /// Every join still waiting is refused (the server drains).
    mutating func refuseWaitingJoins(_ error: ProtocolError) {
        var waiting = queuedJoins.map(\.ticket)
        queuedJoins = []
        if let joining = parkedJoin {
            waiting.insert(joining.arrival.ticket, at: 0)
            sfuTokens[joining.id] = nil
            parkedJoin = nil
        }
        for ticket in waiting { finishJoin(ticket, .rejected(error)) }
    }

    /// A background preparation ended.
    mutating func sfuPrepared(attempt: Int, _ result: Result<SFUMade, SFUError>) {
        guard sfuPreparing == attempt else { return }
        sfuPreparing = nil
        switch result {
        case .success(let made):
            if sfuRoom == nil { out.append(.log(.info, "SFU room ready", ["url": "\(made.room.url)"])) }
            sfuRoom = made.room
            // A joiner's token is made before it joins; one of a participant who left meanwhile goes
            // with the room.
            sfuTokens.merge(made.tokens) { _, new in new }
            sfuError = nil
            out.append(.metric(.sfuPrepared(ok: true, error: nil)))
        case .failure(let error):
            sfuError = error
            out.append(.metric(.sfuPrepared(ok: false, error: error.code)))
            out.append(.log(.warning, "SFU service failed", ["error": "\(error)"]))
        }
        guard !closed, case .failure(let error) = result else { return }
        lastSFUFailure = (attempt, error)
        if holdsLease { perform(arbiter.sfuFailed(status: error.status ?? 0, now: now)) }
    }

    /// After every input: settles what waits for the service, tells the arbiter whether a switch to
    /// the SFU would wait, and has tokens made for participants who joined after the room (unless the
    /// service just failed).
    mutating func syncSFU() {
        // Without the lease nothing waiting is settled and the arbiter hears nothing (a ready room would
        // let a switch to it happen).
        guard env.sfuName != nil, !closed, holdsLease else { return }
        settleSFUWaiters()
        guard !closed, !isWaitingForStore else { return }
        let ready = sfuRoom != nil && everyoneHasAToken
        if ready != arbiter.sfuReady { perform(arbiter.sfuReadiness(ready, now: now)) }
        if sfuRoom != nil, !ready, sfuError == nil { startSFU() }
    }

    /// Once a second: a room in its last quarter of life is made afresh (the adapter extends it) before
    /// a switch could send anybody to it; a session already on it keeps it.
    mutating func renewSFURoom() {
        guard let made = sfuRoom, let exp = made.expiresAt, sfuPreparing == nil, arbiter.provider != .sfu,
            let ttl = config.sfu?.roomTTL.components.seconds, exp - wallMs / 1000 < ttl / 4
        else { return }
        sfuRoom = nil
        sfuTokens = [:]
        startSFU()
    }

    /// The session ended: its room goes (after a preparation under way, which may be making it).
    mutating func endSFU() {
        guard env.sfuName != nil, sfuAttempts > 0 else { return }
        let pending = sfuPreparing
        sfuPreparing = nil
        sfuRoom = nil
        sfuTokens = [:]
        out.append(.sfu(.end(after: pending)))
    }
}
