import Logging
import Prometheus
import TandemArbiter
import TandemProtocol
import TandemSFU

/// What the SFU service made for a session: its room, and tokens for some of its participants.
struct SFUMade: Sendable {
    var room: SFURoom
    var tokens: [ParticipantID: String]
}

/// The session's SFU room. The arbiter says when it is wanted (`prepareSFU`); the room and a token per
/// participant are then made in the background, and the arbiter hears whether a switch to the SFU
/// would wait (`sfuReadiness`) or the service failed (`sfuFailed`). A join that lands on the SFU and an
/// operator's switch wait for it instead (`ensureSFU`).
extension RoomCore {
    func sfuAccess(for id: ParticipantID) -> SFUAccess? {
        guard let sfu = hub.sfu, let room = sfuRoom, let token = sfuTokens[id] else { return nil }
        return SFUAccess(provider: sfu.name, url: room.url, token: token)
    }

    /// Participants without a token, `joining` included.
    private func withoutToken(joining: ParticipantID? = nil) -> [ParticipantID] {
        (arbiter.order + (joining.map { [$0] } ?? [])).filter { sfuTokens[$0] == nil }
    }

    /// Everybody holds a token (no allocation: this runs after every event).
    private var everyoneHasAToken: Bool { arbiter.order.allSatisfy { sfuTokens[$0] != nil } }

    /// Starts making what is missing in the background, unless that is under way already.
    func startSFU(room: Room?) {
        guard let sfu = hub.sfu, let room, sfuTask == nil, !closed else { return }
        let missing = withoutToken()
        guard sfuRoom == nil || !missing.isEmpty else { return }
        let work = preparation(sfu, missing: missing)
        let attempt = sfuAttempts
        let task = Task { [weak room] in
            let result = await work()
            room?.post(.sfuPrepared(attempt: attempt, result))
            return result
        }
        sfuTask = (attempt, task)
    }

    /// Waits until the room and every participant's token (and `joining`'s) exist, making them now if
    /// need be; the service's error when it fails.
    func ensureSFU(joining: ParticipantID? = nil) async -> SFUError? {
        guard let sfu = hub.sfu else { return SFUError(.badRequest, info: "no SFU is configured") }
        if let (attempt, task) = sfuTask {
            await sfuPrepared(attempt: attempt, await task.value, notify: false)
        }
        let missing = withoutToken(joining: joining)
        if sfuRoom != nil && missing.isEmpty { return nil }
        let result = await preparation(sfu, missing: missing)()
        apply(result)
        guard case .failure(let error) = result else { return nil }
        // A switch that waited for the room learns of the failure as from a background attempt.
        await perform(arbiter.sfuFailed(status: error.status ?? 0, now: hub.now()))
        return error
    }

    /// The work of one preparation, to run off the room's task.
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

    /// A background preparation ended (`notify` false when a waiting join or switch took the result).
    func sfuPrepared(attempt: Int, _ result: Result<SFUMade, SFUError>, notify: Bool = true) async {
        guard sfuTask?.attempt == attempt else { return }
        sfuTask = nil
        apply(result)
        guard notify, !closed, case .failure(let error) = result else { return }
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

    /// After every event: tells the arbiter whether a switch to the SFU would wait, and has tokens made
    /// for participants who joined after the room (unless the service just failed).
    func syncSFU(room: Room) async {
        guard hub.sfu != nil, !closed else { return }
        let ready = sfuRoom != nil && everyoneHasAToken
        if ready != arbiter.sfuReady { await perform(arbiter.sfuReadiness(ready, now: hub.now())) }
        if sfuRoom != nil, !ready, sfuError == nil { startSFU(room: room) }
    }

    /// Once a second: a room in its last quarter of life is made afresh (the adapter extends it) before
    /// a switch could send anybody to it; a session already on it keeps it.
    func renewSFURoom(room: Room) {
        guard let made = sfuRoom, let exp = made.expiresAt, sfuTask == nil, arbiter.provider != .sfu,
            let ttl = hub.config.sfu?.roomTTL.components.seconds, exp - hub.wallMs() / 1000 < ttl / 4
        else { return }
        sfuRoom = nil
        sfuTokens = [:]
        startSFU(room: room)
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
