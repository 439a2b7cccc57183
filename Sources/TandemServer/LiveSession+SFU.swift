import Logging
import Prometheus
import TandemArbiter
import TandemProtocol
import TandemSFU
import TandemStore

/// What the SFU service made for a session: its room, and tokens for some of its participants.
struct SFUMade: Sendable {
    var room: SFURoom
    var tokens: [ParticipantID: String]
}

/// A join that waits for the SFU service (the session's room and the joiner's token), with what the
/// join had settled before it began to wait.
struct ParkedJoin {
    let id: ParticipantID
    let context: JoinContext
    let reply: CheckedContinuation<JoinOutcome, Never>
    let offered: Set<ProviderName>
    let scores: ProviderScores
    /// The provider the store gave the session, for its first joiner.
    let current: (ProviderName, Int)?
    /// Preparations numbered above this began after the join did.
    let since: Int
}

/// The session's SFU room. The arbiter says when it is wanted (`prepareSFU`); the room and a token per
/// participant are then made in the background, and the arbiter hears whether a switch to the SFU
/// would wait (`sfuReadiness`) or the service failed (`sfuFailed`). The session's task never waits for the
/// service: a join that lands on the SFU, and an operator's switch to it, wait as `parkedJoin` and
/// `switchWaiters` while the session's other events go on, and are settled when a preparation ends.
extension LiveSessionCore {
    func sfuAccess(for id: ParticipantID) -> SFUAccess? {
        guard let sfu = hub.sfu, let room = sfuRoom, let token = sfuTokens[id] else { return nil }
        return SFUAccess(provider: sfu.name, url: room.url, token: token)
    }

    /// Participants without a token, the waiting joiner's included.
    private func withoutToken() -> [ParticipantID] {
        (arbiter.order + (parkedJoin.map { [$0.id] } ?? [])).filter { sfuTokens[$0] == nil }
    }

    /// Everybody holds a token (no allocation: this runs after every event).
    private var everyoneHasAToken: Bool { arbiter.order.allSatisfy { sfuTokens[$0] != nil } }

    /// The room exists and every participant, and `joining`, holds a token for it.
    func sfuReady(joining: ParticipantID? = nil) -> Bool {
        sfuRoom != nil && everyoneHasAToken && joining.map { sfuTokens[$0] != nil } ?? true
    }

    /// Starts making what is missing in the background, unless that is under way already.
    func startSFU(live: LiveSession?) {
        guard let sfu = hub.sfu, let live, sfuTask == nil, !closed else { return }
        let missing = withoutToken()
        guard sfuRoom == nil || !missing.isEmpty else { return }
        let work = preparation(sfu, missing: missing)
        let attempt = sfuAttempts
        let task = Task { [weak live] in
            let result = await work()
            live?.post(.sfuPrepared(attempt: attempt, result))
            return result
        }
        sfuTask = (attempt, task)
    }

    /// A join waits for the SFU room and its token (the preparation under way settles it, or starts another).
    func park(_ joining: ParkedJoin, live: LiveSession) {
        parkedJoin = joining
        startSFU(live: live)
    }

    /// An operator's switch waits for the SFU room and every participant's token.
    func awaitSFU(switching reply: CheckedContinuation<Result<ProviderState, ProtocolError>, Never>, live: LiveSession) {
        switchWaiters.append((sfuAttempts, reply))
        startSFU(live: live)
    }

    /// Once no preparation is under way: what waited for the service goes on, or hears that it failed,
    /// or a preparation starts for it; then the joins queued behind a settled join go.
    func settleSFUWaiters(live: LiveSession) async {
        guard sfuTask == nil, !closed else { return }
        if let joining = parkedJoin {
            let stillNeeded = arbiter.joinNeedsSFU(offered: joining.offered, chosen: joining.current?.0)
            if !stillNeeded || sfuReady(joining: joining.id) {
                parkedJoin = nil
                await finishJoin(await admit(joining, live: live), joining.reply)
            } else if let failure = lastSFUFailure, failure.attempt > joining.since {
                parkedJoin = nil
                sfuTokens[joining.id] = nil
                await finishJoin(.rejected(ProtocolError(.providerUnavailable, "the SFU service failed: \(failure.error)")), joining.reply)
            } else {
                startSFU(live: live)
            }
        }
        if !switchWaiters.isEmpty, !closed {
            if sfuReady() || arbiter.provider == .sfu {
                let waiters = switchWaiters
                switchWaiters = []
                for waiter in waiters { await forceSwitch(to: .sfu, waiter.reply) }
            } else {
                let failure = lastSFUFailure
                switchWaiters.removeAll { waiter in
                    guard let failure, failure.attempt > waiter.since else { return false }
                    waiter.reply.resume(returning: .failure(ProtocolError(.providerUnavailable, "the SFU service failed: \(failure.error)")))
                    return true
                }
                if !switchWaiters.isEmpty { startSFU(live: live) }
            }
        }
        while parkedJoin == nil, !closed, !queuedJoins.isEmpty {
            let (context, reply) = queuedJoins.removeFirst()
            await startJoin(context, reply, live: live)
        }
    }

    /// The live session closed: a waiting join asks the hub again (a new session), a waiting switch has nothing to move.
    func releaseSFUWaiters() {
        if let joining = parkedJoin { joining.reply.resume(returning: .retry) }
        parkedJoin = nil
        for (_, reply) in queuedJoins { reply.resume(returning: .retry) }
        queuedJoins = []
        for waiter in switchWaiters { waiter.reply.resume(returning: .failure(ProtocolError(.notJoined, "the session has ended"))) }
        switchWaiters = []
    }

    /// Every join still waiting is refused (the server drains).
    func refuseWaitingJoins(_ error: ProtocolError) async {
        var waiting = queuedJoins.map(\.1)
        queuedJoins = []
        if let joining = parkedJoin {
            waiting.insert(joining.reply, at: 0)
            sfuTokens[joining.id] = nil
            parkedJoin = nil
        }
        for reply in waiting { await finishJoin(.rejected(error), reply) }
    }

    /// The work of one preparation, to run off the session's task.
    private func preparation(_ sfu: any SFUProvider, missing: [ParticipantID]) -> @Sendable () async -> Result<SFUMade, SFUError> {
        sfuAttempts += 1
        let known = sfuRoom
        let name = session.rawValue
        // Daily's rooms hold at most 200.
        let maxParticipants = min(hub.config.arbiter.maxParticipants, 200)
        let expiresAt = hub.wallMs() / 1000 + Int64(hub.config.sfu?.roomTTL.components.seconds ?? 86_400)
        let rooms = hub.sfuRooms
        return {
            do throws(SFUError) {
                let room: SFURoom
                if let known {
                    room = known
                } else {
                    await rooms?.claim(name)
                    room = try await sfu.room(session: name, maxParticipants: maxParticipants, expiresAt: expiresAt)
                }
                return .success(SFUMade(room: room, tokens: try await Self.tokens(sfu, room, missing, expiresAt)))
            } catch {
                return .failure(error)
            }
        }
    }

    /// Every participant's token at once (the adapter still paces them).
    private static func tokens(_ sfu: any SFUProvider, _ room: SFURoom, _ ids: [ParticipantID], _ expiresAt: Int64) async throws(SFUError)
        -> [ParticipantID: String]
    {
        do {
            return try await withThrowingTaskGroup(of: (ParticipantID, String).self) { group in
                for id in ids {
                    group.addTask { (id, try await sfu.token(room: room, participant: id.rawValue, expiresAt: expiresAt)) }
                }
                var tokens: [ParticipantID: String] = [:]
                for try await (id, token) in group { tokens[id] = token }
                return tokens
            }
        } catch let error as SFUError {
            throw error
        } catch {
            throw SFUError(.transport, info: "\(error)")
        }
    }

    /// A background preparation ended.
    func sfuPrepared(attempt: Int, _ result: Result<SFUMade, SFUError>) async {
        guard sfuTask?.attempt == attempt else { return }
        sfuTask = nil
        apply(result)
        guard !closed, case .failure(let error) = result else { return }
        lastSFUFailure = (attempt, error)
        await perform(arbiter.sfuFailed(status: error.status ?? 0, now: hub.now()))
    }

    private func apply(_ result: Result<SFUMade, SFUError>) {
        switch result {
        case .success(let made):
            if sfuRoom == nil { logger.info("SFU room ready", metadata: ["url": "\(made.room.url)"]) }
            sfuRoom = made.room
            // A joiner's token is made before it joins; one of a participant who left meanwhile goes
            // with the room.
            sfuTokens.merge(made.tokens) { _, new in new }
            sfuError = nil
            hub.metrics.sfuPreparations[true]?.increment()
        case .failure(let error):
            sfuError = error
            hub.metrics.sfuPreparations[false]?.increment()
            hub.metrics.sfuErrors[error.code]?.increment()
            logger.warning("SFU service failed", metadata: ["error": "\(error)"])
        }
    }

    /// After every event: settles what waits for the service, tells the arbiter whether a switch to the SFU would wait, and has tokens made
    /// for participants who joined after the room (unless the service just failed).
    func syncSFU(live: LiveSession) async {
        guard hub.sfu != nil, !closed else { return }
        await settleSFUWaiters(live: live)
        guard !closed else { return }
        let ready = sfuRoom != nil && everyoneHasAToken
        if ready != arbiter.sfuReady { await perform(arbiter.sfuReadiness(ready, now: hub.now())) }
        if sfuRoom != nil, !ready, sfuError == nil { startSFU(live: live) }
    }

    /// Once a second: a room in its last quarter of life is made afresh (the adapter extends it) before
    /// a switch could send anybody to it; a session already on it keeps it.
    func renewSFURoom(live: LiveSession) {
        guard let made = sfuRoom, let exp = made.expiresAt, sfuTask == nil, arbiter.provider != .sfu,
            let ttl = hub.config.sfu?.roomTTL.components.seconds, exp - hub.wallMs() / 1000 < ttl / 4
        else { return }
        sfuRoom = nil
        sfuTokens = [:]
        startSFU(live: live)
    }

    /// The session ended: its room goes (after a preparation under way, which may be making it). The
    /// delete is registered at once, so that a session starting again under this id can call it off.
    func endSFU() async {
        guard let rooms = hub.sfuRooms, sfuAttempts > 0 else { return }
        let pending = sfuTask?.task
        sfuTask = nil
        sfuRoom = nil
        sfuTokens = [:]
        var after: (@Sendable () async -> Void)?
        if let pending { after = { _ = await pending.value } }
        await rooms.delete(session.rawValue, after: after)
    }
}
