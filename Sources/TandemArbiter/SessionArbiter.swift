import TandemProtocol

/// What the arbiter asks the I/O layer to do. The layer turns them into wire messages and store writes.
public enum ArbiterAction: Sendable, Equatable {
    /// Move every participant to `to` at `epoch` (tell each with its own `provider` message).
    case switchProvider(to: ProviderName, epoch: Int, previous: ProviderName, reason: SwitchReason)
    /// Add `delta` to a provider's learning score.
    case adjustScore(ProviderName, delta: Int)
    /// Tell the other participants that a peer's socket dropped or came back.
    case peerState(ParticipantID, PeerConnectionState)
    /// Remove a participant: tell the others `peer-left`, close its socket if it has one.
    case removeParticipant(ParticipantID, reason: LeaveReason)
    /// The session has no participants left.
    case sessionEnded
    case quality(ParticipantID, score: Int, level: QualityLevel)
    /// Recommend a maximum video height to this participant for its own uplink.
    case video(ParticipantID, maxHeight: Int, reason: String)
    case alert(AlertKind, ParticipantID, value: Double)
    /// Make the session's SFU room and every participant's token now, then report with
    /// ``SessionArbiter/sfuReadiness(_:now:)`` or ``SessionArbiter/sfuFailed(status:now:)``.
    case prepareSFU
}

/// The outcome of a `join`.
public enum JoinDecision: Sendable, Equatable {
    /// Admitted on `provider` at `epoch`; `actions` are to be performed before the welcome is sent.
    case admitted(provider: ProviderName, epoch: Int, polite: Bool, actions: [ArbiterAction])
    case rejected(ProtocolError)
}

/// One session's provider arbiter: which provider the whole session is on, at which epoch, who is in it,
/// and how their health reports move it. A value type with one method per event; it reads no clock and
/// does no I/O, and returns what must be done.
public struct SessionArbiter: Sendable {
    public struct Participant: Sendable, Equatable {
        public let id: ParticipantID
        public let name: String?
        public let offered: Set<ProviderName>
        /// Perfect-negotiation role on `p2p`.
        public let polite: Bool
        public let joinedAt: Instant
        public internal(set) var lastSeen: Instant
        public internal(set) var lastHealthAt: Instant
        public internal(set) var socketOpen = true
        public internal(set) var disconnectedAt: Instant?
        public internal(set) var media: MediaState = .new
        public internal(set) var lastReport: HealthReport?
        var connectedCountedEpoch: Int?
        var quality = QualityTracker()
        public internal(set) var video = VideoLadder()
        var activeAlerts: Set<AlertKind> = []
        var badStreak = 0
        public var qualityLevel: QualityLevel? { quality.level }
    }

    public let session: SessionID
    public var config: ArbiterConfig
    public private(set) var provider: ProviderName?
    public private(set) var epoch: Int
    public private(set) var participants: [ParticipantID: Participant] = [:]
    /// Participant ids in join order.
    public private(set) var order: [ParticipantID] = []
    private var lastSwitchAt: Instant?
    /// The session's SFU room exists and every participant holds a token for it (the I/O layer says so),
    /// so a switch to the SFU waits on nothing.
    public private(set) var sfuReady = false
    /// A switch to the SFU that waits for its room.
    public private(set) var pendingSFU: PendingSwitch?
    private var sfuPreparing = false
    /// After the SFU service failed, no new attempt before this.
    private var sfuBlockedUntil: Instant?
    /// The last epoch whose media failed, and who said so: its provider's score pays for the failure
    /// only once it is corroborated.
    private var failure: FailureRecord?
    /// When the session's recent failure switches happened, oldest first (those within the window).
    private var failureSwitches: [Instant] = []
    /// A failure reported inside the cool-down, acted on when it ends; every change of epoch drops it.
    public private(set) var deferredFailure: PendingSwitch?
    /// What this session has added to each provider's score so far (bounded by `sessionScoreCap`).
    private var scoreContribution: [ProviderName: Int] = [:]

    struct FailureRecord: Sendable {
        let epoch: Int
        let provider: ProviderName
        var reporters: Set<ParticipantID> = []
        var measuredByServer = false
        var charged = false
    }

    public struct PendingSwitch: Sendable, Equatable {
        public let reason: SwitchReason
        /// Whose report asked for it.
        public let by: ParticipantID
    }

    /// A new, empty session. `epoch` is the last epoch this session id used, so that epochs never go back.
    public init(session: SessionID, config: ArbiterConfig, lastEpoch: Int = 0) {
        self.session = session
        self.config = config
        self.epoch = lastEpoch
    }

    public var isEmpty: Bool { participants.isEmpty }

    /// What `participant` should be told about the provider.
    public func polite(for id: ParticipantID) -> Bool {
        guard provider == .p2p else { return true }
        return participants[id]?.polite ?? true
    }

    /// The provider a first joiner offering `offered` gets: the best-scoring one the server enables.
    public func proposal(offered: Set<ProviderName>, scores: ProviderScores) -> ProviderName? {
        scores.best(among: config.enabled.intersection(offered), order: config.fallbackOrder)
    }

    // MARK: Events

    /// A participant asks to join. The first joiner of an empty session chooses the provider: the
    /// best-scoring one that the server enables and the joiner offers. `current` is the session's provider
    /// as another node may already have chosen it (from the store); when given, it wins.
    public mutating func join(
        _ id: ParticipantID, name: String?, offered: Set<ProviderName>, scores: ProviderScores, now: Instant,
        current: (ProviderName, Int)? = nil
    ) -> JoinDecision {
        guard participants[id] == nil else { return .rejected(ProtocolError(.alreadyJoined, "already joined")) }
        guard participants.count < config.maxParticipants else {
            return .rejected(ProtocolError(.sessionFull, "the session has \(config.maxParticipants) participants"))
        }
        var actions: [ArbiterAction] = []
        if let current {
            provider = current.0
            epoch = current.1
        } else if provider == nil {
            guard let chosen = proposal(offered: offered, scores: scores) else {
                return .rejected(ProtocolError(.providerUnavailable, "none of the offered providers is enabled on this server"))
            }
            provider = chosen
            epoch += 1
            lastSwitchAt = now
        }
        guard let current = provider else { return .rejected(ProtocolError(.internal, "no provider")) }
        if ArbiterConfig.isPairOnly(current) && participants.count >= 2 {
            // A third joiner: only an SFU that everybody can use serves more than two.
            let everyone = participants.values.map(\.offered) + [offered]
            guard config.enabled.contains(.sfu), everyone.allSatisfy({ $0.contains(.sfu) }) else {
                return .rejected(ProtocolError(.sessionFull, "\(current.rawValue) serves two participants and no SFU is available"))
            }
            // The I/O layer makes the room and the joiner's token first (see joinNeedsSFU).
            guard sfuReady else { return .rejected(ProtocolError(.providerUnavailable, "the session's SFU room is not ready")) }
            actions.append(switchTo(.sfu, reason: .join, now: now))
        } else if !offered.contains(current) {
            return .rejected(ProtocolError(.providerUnavailable, "the session is on \(current.rawValue), which this client does not offer"))
        }
        // The later joiner is polite; if every peer present is polite already, this one is not, so that
        // each pair keeps exactly one impolite side.
        let polite = participants.values.contains { !$0.polite }
        // Asked only once the joiner is admitted: a refused join leaves nothing waiting.
        if participants.isEmpty, config.sfuPreparation == .sessionStart, offered.contains(.sfu) {
            actions += requestSFU(now: now)
        }
        participants[id] = Participant(
            id: id, name: name, offered: offered, polite: polite, joinedAt: now, lastSeen: now, lastHealthAt: now)
        order.append(id)
        return .admitted(provider: provider!, epoch: epoch, polite: self.polite(for: id), actions: actions)
    }

    /// Whether admitting a joiner that offers `offered` puts it on the SFU, so that the SFU room and the
    /// joiner's token must exist before the join: the session is (or, for a new session, `chosen` puts
    /// it) on the SFU, or the joiner is a third one on a provider that serves two.
    public func joinNeedsSFU(offered: Set<ProviderName>, chosen: ProviderName? = nil) -> Bool {
        guard let current = provider ?? chosen, participants.count < config.maxParticipants, offered.contains(.sfu) else { return false }
        if current == .sfu { return true }
        guard ArbiterConfig.isPairOnly(current), participants.count >= 2, config.enabled.contains(.sfu) else { return false }
        return participants.values.allSatisfy { $0.offered.contains(.sfu) }
    }

    /// Any message from a participant: it is alive.
    public mutating func activity(_ id: ParticipantID, now: Instant) {
        participants[id]?.lastSeen = now
    }

    /// A participant's socket closed without `leave`: it may resume until the heartbeat timeout.
    public mutating func disconnected(_ id: ParticipantID, now: Instant) -> [ArbiterAction] {
        guard var p = participants[id], p.socketOpen else { return [] }
        p.socketOpen = false
        p.disconnectedAt = now
        participants[id] = p
        return [.peerState(id, .reconnecting)]
    }

    /// A participant resumed on a new socket.
    public mutating func resumed(_ id: ParticipantID, now: Instant) -> [ArbiterAction] {
        guard var p = participants[id] else { return [] }
        p.lastSeen = now
        let wasClosed = !p.socketOpen
        p.socketOpen = true
        p.disconnectedAt = nil
        participants[id] = p
        return wasClosed ? [.peerState(id, .active)] : []
    }

    /// A participant leaves or is removed.
    public mutating func leave(_ id: ParticipantID, reason: LeaveReason) -> [ArbiterAction] {
        guard participants.removeValue(forKey: id) != nil else { return [] }
        order.removeAll { $0 == id }
        var actions: [ArbiterAction] = [.removeParticipant(id, reason: reason)]
        if pendingSFU?.by == id { pendingSFU = nil }
        if deferredFailure?.by == id { deferredFailure = nil }
        if participants.isEmpty {
            provider = nil
            lastSwitchAt = nil
            sfuReady = false
            sfuPreparing = false
            sfuBlockedUntil = nil
            failure = nil
            failureSwitches = []
            scoreContribution = [:]
            actions.append(.sessionEnded)
        }
        return actions
    }

    /// A `health` report. Reports for another epoch or provider are ignored.
    public mutating func health(_ id: ParticipantID, _ report: HealthReport, now: Instant) -> [ArbiterAction] {
        guard var p = participants[id] else { return [] }
        p.lastSeen = now
        p.lastHealthAt = now
        p.activeAlerts.remove(.stalePeer)
        defer { if participants[id] != nil { participants[id] = p } }
        guard report.epoch == epoch, report.provider == provider, let current = provider else {
            // A failure of the epoch the session just left still counts as a witness of it.
            guard report.media == .failed, failure?.epoch == report.epoch, failure?.provider == report.provider else { return [] }
            return witnessFailure(by: id, measured: false)
        }

        var actions: [ArbiterAction] = []
        p.media = report.media
        p.lastReport = report
        if report.media == .connected, p.connectedCountedEpoch != epoch {
            p.connectedCountedEpoch = epoch
            actions += adjustScore(current, by: ProviderScores.onConnected)
        }
        if report.media == .connected, deferredFailure?.by == id { deferredFailure = nil }
        if report.media == .failed { return actions + failure(&p, id, current: current, measured: false, now: now) }
        actions += observe(&p, id, report, now: now, current: current)
        return actions
    }

    /// The server's own finding that a participant's media failed on `epoch` (the relay's leg for it
    /// failed): the session moves on as for a `failed` report, but nothing stands for a report from the
    /// participant (its liveness and last report stay its own).
    public mutating func mediaFailed(_ id: ParticipantID, epoch: Int, provider: ProviderName, now: Instant) -> [ArbiterAction] {
        guard var p = participants[id], epoch == self.epoch, provider == self.provider else { return [] }
        defer { if participants[id] != nil { participants[id] = p } }
        p.media = .failed
        return failure(&p, id, current: provider, measured: true, now: now)
    }

    /// A participant's media failed on the current provider: the session moves on, at most once per
    /// cool-down and `failureSwitchLimit` times per window. The provider's score pays only for a
    /// corroborated failure (see ``witnessFailure(by:measured:)``).
    private mutating func failure(
        _ p: inout Participant, _ id: ParticipantID, current: ProviderName, measured: Bool, now: Instant
    ) -> [ArbiterAction] {
        p.badStreak = 0
        var actions: [ArbiterAction] = []
        if let level = p.quality.observe(.lost, upgradeReports: config.upgradeReports) {
            actions.append(.quality(id, score: 0, level: level))
        }
        participants[id] = p
        // The caller writes `p` back: it carries what changes below.
        defer { p = participants[id] ?? p }
        if failure?.epoch != epoch { failure = FailureRecord(epoch: epoch, provider: current) }
        actions += witnessFailure(by: id, measured: measured)
        // The epoch's failure is being handled already: the switch waits for the SFU's room.
        if pendingSFU?.reason == .failure { return actions }
        failureSwitches.removeAll { now - $0 >= config.failureSwitchWindow }
        guard failureSwitches.count < config.failureSwitchLimit else {
            if participants[id]?.activeAlerts.insert(.switchLimit).inserted == true {
                actions.append(.alert(.switchLimit, id, value: Double(config.failureSwitchLimit)))
            }
            return actions
        }
        // Below the limit (again): the next time it is reached is worth saying.
        for other in order { participants[other]?.activeAlerts.remove(.switchLimit) }
        if let last = failureSwitches.last, now - last < config.failureCoolDown {
            deferredFailure = PendingSwitch(reason: .failure, by: id)
            return actions
        }
        let next = nextAfterFailure(of: current)
        actions += next == .sfu && current != .sfu ? wantSFU(.failure, by: id, now: now) : [switchTo(next, reason: .failure, now: now)]
        return actions
    }

    /// Somebody attests that the failed epoch's media failed: the participant `id` in a report, or the
    /// server's own measurement (a relay leg that failed). A failure costs its provider's score once it is
    /// corroborated, by the server or by a second participant, so that one client cannot poison the
    /// score every later session starts from.
    private mutating func witnessFailure(by id: ParticipantID, measured: Bool) -> [ArbiterAction] {
        guard var record = failure, !record.charged else { return [] }
        record.reporters.insert(id)
        record.measuredByServer = record.measuredByServer || measured
        let corroborated = record.measuredByServer || record.reporters.count >= 2
        record.charged = corroborated
        failure = record
        return corroborated ? adjustScore(record.provider, by: ProviderScores.onFailure) : []
    }

    /// A change to a provider's learning score, within what one session may move it in total.
    private mutating func adjustScore(_ provider: ProviderName, by delta: Int) -> [ArbiterAction] {
        let cap = config.sessionScoreCap
        let before = scoreContribution[provider, default: 0]
        let after = min(max(before + delta, -cap), cap)
        guard after != before else { return [] }
        scoreContribution[provider] = after
        return [.adjustScore(provider, delta: after - before)]
    }

    /// The server's own measurement of a participant's media (the relay reads it from RTCP): it feeds
    /// the quality level, alerts and quality switching like a report's figures, but says nothing about
    /// the media state, liveness or scores, which remain the participant's to report.
    public mutating func measured(_ id: ParticipantID, _ report: HealthReport, now: Instant) -> [ArbiterAction] {
        guard var p = participants[id], report.epoch == epoch, report.provider == provider, let current = provider else { return [] }
        defer { if participants[id] != nil { participants[id] = p } }
        return observe(&p, id, report, now: now, current: current)
    }

    private mutating func observe(_ p: inout Participant, _ id: ParticipantID, _ report: HealthReport, now: Instant, current: ProviderName)
        -> [ArbiterAction]
    {
        var actions: [ArbiterAction] = []
        let hasMetrics = report.rttMs != nil || report.lossPct != nil || report.jitterMs != nil
        if hasMetrics {
            let score = QualityScore.score(rttMs: report.rttMs, lossPct: report.lossPct, jitterMs: report.jitterMs)
            if let level = p.quality.observe(QualityScore.level(for: score), upgradeReports: config.upgradeReports) {
                actions.append(.quality(id, score: score, level: level))
            }
        }
        actions += alerts(for: &p, report)
        if config.sfuPreparation == .qualityTrend, current != .sfu, usable(.sfu),
            config.alertThresholds.isBad(report) || config.switchThresholds.isBad(report)
        {
            actions += requestSFU(now: now)
        }
        if let bitrate = report.bitrateKbps,
            let change = p.video.observe(bitrateKbps: bitrate, lossPct: report.lossPct, upgradeReports: config.upgradeReports)
        {
            actions.append(.video(id, maxHeight: change.maxHeight, reason: change.reason))
        }
        p.badStreak = config.switchThresholds.isBad(report) ? p.badStreak + 1 : 0
        if p.badStreak >= config.consecutiveBadReports, pendingSFU == nil, canSwitchForQuality(from: current, now: now) {
            participants[id] = p
            if config.qualityTarget == .sfu {
                actions += wantSFU(.quality, by: id, now: now)
            } else {
                actions.append(switchTo(config.qualityTarget, reason: .quality, now: now))
            }
            p = participants[id]!
        }
        return actions
    }

    // MARK: The SFU's room

    /// The I/O layer's word on the SFU room: ready means it exists and every participant holds a token.
    /// A switch that waited for it happens now, if it is still due.
    public mutating func sfuReadiness(_ ready: Bool, now: Instant) -> [ArbiterAction] {
        sfuReady = ready
        guard ready else { return [] }
        sfuPreparing = false
        sfuBlockedUntil = nil
        for id in order { participants[id]?.activeAlerts.remove(.sfuUnavailable) }
        guard let pending = pendingSFU else { return [] }
        pendingSFU = nil
        guard provider != .sfu, usable(.sfu) else { return [] }
        return [switchTo(.sfu, reason: pending.reason, now: now)]
    }

    /// The SFU service could not make the room or a token (`status` is its HTTP answer, 0 for none).
    /// A switch that waited for it is given up with an alert; a failed provider's session moves on to
    /// the next provider after the SFU, or restarts where it is.
    public mutating func sfuFailed(status: Int, now: Instant) -> [ArbiterAction] {
        sfuReady = false
        sfuPreparing = false
        sfuBlockedUntil = now + config.sfuRetryAfter
        guard let pending = pendingSFU else { return [] }
        pendingSFU = nil
        var actions: [ArbiterAction] = []
        if var p = participants[pending.by], p.activeAlerts.insert(.sfuUnavailable).inserted {
            participants[pending.by] = p
            actions.append(.alert(.sfuUnavailable, pending.by, value: Double(status)))
        }
        if pending.reason == .failure { actions.append(switchTo(fallbackPastSFU(), reason: .failure, now: now)) }
        return actions
    }

    /// A switch to the SFU: now when its room is ready, else once it is.
    private mutating func wantSFU(_ reason: SwitchReason, by id: ParticipantID, now: Instant) -> [ArbiterAction] {
        if sfuReady { return [switchTo(.sfu, reason: reason, now: now)] }
        if let until = sfuBlockedUntil, now < until {
            // The service failed a moment ago: a failed session moves on without it.
            return reason == .failure ? [switchTo(fallbackPastSFU(), reason: .failure, now: now)] : []
        }
        pendingSFU = PendingSwitch(reason: reason, by: id)
        return requestSFU(now: now)
    }

    private mutating func requestSFU(now: Instant) -> [ArbiterAction] {
        guard !sfuReady, !sfuPreparing, config.enabled.contains(.sfu), sfuBlockedUntil.map({ now >= $0 }) ?? true else { return [] }
        sfuPreparing = true
        return [.prepareSFU]
    }

    /// Where a failed session goes when the SFU cannot take it: the next usable provider after the SFU
    /// in the fallback order, else the current one again.
    private func fallbackPastSFU() -> ProviderName {
        firstUsable(after: .sfu, skipping: provider) ?? provider ?? .sfu
    }

    /// An operator's switch. It ignores the cool-down but not capacity or what is enabled.
    public mutating func forceSwitch(to target: ProviderName, now: Instant) -> Result<[ArbiterAction], ProtocolError> {
        guard provider != nil else { return .failure(ProtocolError(.notJoined, "the session has no participants")) }
        guard config.enabled.contains(target) else {
            return .failure(ProtocolError(.providerUnavailable, "\(target.rawValue) is not enabled on this server"))
        }
        guard !ArbiterConfig.isPairOnly(target) || participants.count <= 2 else {
            return .failure(ProtocolError(.sessionFull, "\(target.rawValue) serves two participants"))
        }
        guard participants.values.allSatisfy({ $0.offered.contains(target) }) else {
            return .failure(ProtocolError(.providerUnavailable, "not every participant offers \(target.rawValue)"))
        }
        guard target != .sfu || sfuReady else { return .failure(ProtocolError(.providerUnavailable, "the session's SFU room is not ready")) }
        return .success([switchTo(target, reason: .admin, now: now)])
    }

    /// Another node moved the session (seen in the shared store): follow it without acting again.
    public mutating func adopt(provider name: ProviderName, epoch newEpoch: Int, now: Instant) -> Bool {
        guard newEpoch > epoch else { return false }
        provider = name
        epoch = newEpoch
        lastSwitchAt = now
        pendingSFU = nil
        deferredFailure = nil
        resetStreaks()
        return true
    }

    /// Time passes: remove participants past the heartbeat timeout and flag stale ones.
    public mutating func tick(now: Instant) -> [ArbiterAction] {
        var actions: [ArbiterAction] = []
        if let deferred = deferredFailure, failureSwitches.last.map({ now - $0 >= config.failureCoolDown }) ?? true,
            var p = participants[deferred.by], let current = provider
        {
            deferredFailure = nil
            actions += failure(&p, deferred.by, current: current, measured: false, now: now)
        }
        for id in order {
            guard var p = participants[id] else { continue }
            let silentSince = p.socketOpen ? p.lastSeen : (p.disconnectedAt ?? p.lastSeen)
            if now - silentSince >= config.heartbeatTimeout {
                actions += leave(id, reason: .timeout)
                continue
            }
            if p.socketOpen, now - p.lastHealthAt >= config.staleAfter, !p.activeAlerts.contains(.stalePeer) {
                p.activeAlerts.insert(.stalePeer)
                participants[id] = p
                actions.append(.alert(.stalePeer, id, value: Double((now - p.lastHealthAt).milliseconds)))
            }
        }
        return actions
    }

    // MARK: Rules

    private mutating func switchTo(_ target: ProviderName, reason: SwitchReason, now: Instant) -> ArbiterAction {
        let previous = provider ?? target
        provider = target
        epoch += 1
        lastSwitchAt = now
        pendingSFU = nil
        deferredFailure = nil
        if reason == .failure { failureSwitches.append(now) }
        resetStreaks()
        return .switchProvider(to: target, epoch: epoch, previous: previous, reason: reason)
    }

    private mutating func resetStreaks() {
        for id in order { participants[id]?.badStreak = 0 }
    }

    /// The next provider after `current` in the fallback order that is enabled, offered by everybody and
    /// big enough; when there is none, `current` again (clients treat it as an ICE restart).
    func nextAfterFailure(of current: ProviderName) -> ProviderName {
        firstUsable(after: current) ?? current
    }

    /// The first usable provider after `p` in the fallback order (anywhere in it when `p` is not in it).
    private func firstUsable(after p: ProviderName, skipping: ProviderName? = nil) -> ProviderName? {
        let order = config.fallbackOrder
        let after = order.firstIndex(of: p).map { Array(order[($0 + 1)...]) } ?? order.filter { $0 != p }
        return after.first { $0 != skipping && usable($0) }
    }

    private func usable(_ p: ProviderName) -> Bool {
        config.enabled.contains(p) && participants.values.allSatisfy { $0.offered.contains(p) }
            && (!ArbiterConfig.isPairOnly(p) || participants.count <= 2)
    }

    private func canSwitchForQuality(from current: ProviderName, now: Instant) -> Bool {
        guard current != config.qualityTarget, usable(config.qualityTarget) else { return false }
        guard let last = lastSwitchAt else { return true }
        return now - last >= config.coolDown
    }

    private func alerts(for p: inout Participant, _ r: HealthReport) -> [ArbiterAction] {
        let t = config.alertThresholds
        let checks: [(AlertKind, Double?, (Double) -> Bool)] = [
            (.highLatency, r.rttMs, { $0 > t.rttMs }),
            (.packetLoss, r.lossPct, { $0 > t.lossPct }),
            (.highJitter, r.jitterMs, { $0 > t.jitterMs }),
            (.lowBandwidth, r.media == .connected ? r.bitrateKbps : nil, { $0 < self.config.lowBandwidthKbps }),
        ]
        var actions: [ArbiterAction] = []
        for (kind, value, isBad) in checks {
            guard let value else { continue }
            if isBad(value) {
                if p.activeAlerts.insert(kind).inserted { actions.append(.alert(kind, p.id, value: value)) }
            } else {
                p.activeAlerts.remove(kind)
            }
        }
        return actions
    }
}
