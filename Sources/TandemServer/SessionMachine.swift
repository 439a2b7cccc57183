import Logging
import TandemArbiter
import TandemMedia
import TandemMediaCore
import TandemProtocol
import TandemSFU
import TandemStore

/// A participant as the admin API shows it.
public struct ParticipantSnapshot: Sendable {
    public var id: ParticipantID
    public var name: String?
    public var state: PeerConnectionState
    public var lastSeenMs: Int64
    public var health: HealthReport?
    public var qualityLevel: QualityLevel?
    public var maxVideoHeight: Int
    /// The media relay's figures for this participant's leg, while the session is on the relay.
    public var relay: RelayLegStats?
}

public struct SessionSnapshot: Sendable {
    public var provider: ProviderName?
    public var epoch: Int
    public var participants: [ParticipantSnapshot]
}

/// One live session's decisions as a value type: inputs in (joins, messages, ticks, the store's and
/// the backends' answers), effects out (frames to send, store writes, replies, relay and SFU work),
/// with time passed in. The arbiter decides the provider; this adds the members, their sequence
/// numbers and sockets, the order of a join, and the relay's and SFU's bookkeeping. `LiveSession` is
/// its I/O shell.
///
/// A join reads the store before it is decided (scores, and the claim of the first joiner; the missed
/// messages of a resume): the machine asks with ``SessionEffect/read(_:)`` and the shell answers before
/// anything else, so a join is decided as if it had waited, without a suspension inside the machine.
struct SessionMachine {
    /// What does not change in a session's life.
    struct Environment {
        var config: ServerConfig
        var iceServers: ICEServerMint
        var hasRelay: Bool
        /// The SFU service's provider name, when there is one.
        var sfuName: String?
    }

    struct Member {
        var connection: UInt64?
        var nextSeq = 1
        let resumeKey: String
        let identity: String?
        var candidateEpoch = -1
        var candidateCount = 0
    }

    /// A join that waits for the SFU service (the session's room and the joiner's token), with what the
    /// join had settled before it began to wait.
    struct ParkedJoin {
        let arrival: JoinArrival
        let offered: Set<ProviderName>
        let scores: ProviderScores
        /// The provider the store gave the session, for its first joiner.
        let current: ProviderState?
        /// Preparations numbered above this began after the join did.
        let since: Int
        var id: ParticipantID { arrival.participant }
    }

    /// A join waiting for a store read.
    struct Preparing {
        let arrival: JoinArrival
        /// What the join decided before it read (a participant of the same identity replaced).
        var actions: [ArbiterAction]
        var scores: ProviderScores?
    }

    let session: SessionID
    let env: Environment
    var arbiter: SessionArbiter
    var members: [ParticipantID: Member] = [:]
    var closed = false
    /// The epoch the relay is open for, while the session is on it.
    var relayEpoch: Int?
    /// The relay's latest figures per participant, for the admin view.
    var relayStats: [ParticipantID: RelayLegStats] = [:]
    /// The session's SFU room and the participants' tokens for it, made ahead of a switch.
    var sfuRoom: SFURoom?
    var sfuTokens: [ParticipantID: String] = [:]
    /// The preparation under way in the background, by attempt number.
    var sfuPreparing: Int?
    /// Preparations started; after one, the service may hold a room for this session.
    var sfuAttempts = 0
    /// The SFU service's last failure, until the arbiter asks for the room again.
    var sfuError: SFUError?
    /// The last preparation that failed, by number (a waiter fails with one that began after it).
    var lastSFUFailure: (attempt: Int, error: SFUError)?
    var parkedJoin: ParkedJoin?
    var queuedJoins: [JoinArrival] = []
    /// Operators' switches to the SFU waiting for its room.
    var switchWaiters: [(since: Int, ticket: Ticket)] = []
    var preparing: Preparing?
    /// False while the node cannot be sure of its lease in the store: another node may become the
    /// session's home, so this one decides nothing (no timeouts, no switches), and only passes
    /// signals, answers pings and takes leaves until the lease is renewed.
    var holdsLease = true
    /// When each participant's last health report was kept in the store, and its media state.
    var lastRecorded: [ParticipantID: (at: Instant, media: MediaState)] = [:]

    /// The input being handled, its time and its effects so far.
    var now = Instant.zero
    var wallMs: Int64 = 0
    var out: [SessionEffect] = []

    init(session: SessionID, env: Environment, lastEpoch: Int) {
        self.session = session
        self.env = env
        arbiter = SessionArbiter(session: session, config: env.config.arbiter, lastEpoch: lastEpoch)
    }

    var config: ServerConfig { env.config }

    /// Whether a store read is outstanding: the shell answers it before anything else.
    var isWaitingForStore: Bool { preparing != nil }

    /// How many sockets the session refers to, without building the set (after every event).
    var connectionsInUseCount: Int {
        members.values.reduce(0) { $0 + ($1.connection == nil ? 0 : 1) } + (parkedJoin == nil ? 0 : 1) + (preparing == nil ? 0 : 1)
            + queuedJoins.count
    }

    /// Every socket the session still refers to (its members', and its waiting joins').
    var connectionsInUse: Set<UInt64> {
        var ids = Set(members.values.compactMap(\.connection))
        if let parkedJoin { ids.insert(parkedJoin.arrival.connection) }
        if let preparing { ids.insert(preparing.arrival.connection) }
        for arrival in queuedJoins { ids.insert(arrival.connection) }
        return ids
    }

    /// Handles one input; the effects are for the shell to perform in order.
    mutating func handle(_ input: SessionInput, now: Instant, wallMs: Int64) -> [SessionEffect] {
        self.now = now
        self.wallMs = wallMs
        out = []
        dispatch(input)
        // After every input the relay and the SFU follow the session, unless a join waits for a read.
        if !isWaitingForStore {
            syncRelay()
            syncSFU()
        }
        defer { out = [] }
        return out
    }

    private mutating func dispatch(_ input: SessionInput) {
        switch input {
        case .join(let arrival):
            guard !closed else { return out.append(.replyJoin(arrival.ticket, .retry)) }
            // A resume needs nothing of the SFU service, so it never queues behind a join that does.
            guard arrival.request.resume != nil || (parkedJoin == nil && queuedJoins.isEmpty && preparing == nil) else {
                guard queuedJoins.count < config.arbiter.maxParticipants else {
                    return out.append(.replyJoin(arrival.ticket, .rejected(ProtocolError(.sessionFull, "too many joins are waiting for this session"))))
                }
                return queuedJoins.append(arrival)
            }
            startJoin(arrival)
        case .answered(let ticket, let answer):
            guard let waiting = preparing, waiting.arrival.ticket == ticket else { return }
            continueJoin(waiting, answer)
        case let .message(id, connection, message):
            guard !closed, members[id]?.connection == connection else { return }
            handleMessage(id, message)
        case let .socketClosed(id, connection):
            guard !closed, let member = members[id], member.connection == connection else { return }
            members[id]?.connection = nil
            perform(arbiter.disconnected(id, now: now))
            out.append(.write(.presence(presence(id, state: .reconnecting))))
        case let .reject(id, connection, error):
            guard !closed, members[id]?.connection == connection else { return }
            arbiter.activity(id, now: now)
            sendError(id, error)
        case let .close(id, connection, code, reason):
            guard let socket = members[id]?.connection, socket == connection else { return }
            out.append(.closeSocket(connection: socket, code: code, reason: reason))
        case .tick:
            guard !closed, holdsLease else { return }
            perform(arbiter.tick(now: now))
            renewSFURoom()
        case let .forceSwitch(ticket, name):
            guard !closed else { return out.append(.replySwitch(ticket, .failure(ProtocolError(.notJoined, "the session has ended")))) }
            guard holdsLease else {
                return out.append(.replySwitch(ticket, .failure(ProtocolError(.providerUnavailable, "this node cannot reach the session store"))))
            }
            if name == .sfu, env.sfuName != nil, arbiter.provider != nil, !sfuReady() {
                // The SFU room and tokens are made off the session's task; the switch happens when they exist.
                switchWaiters.append((sfuAttempts, ticket))
                return startSFU()
            }
            forceSwitch(to: name, ticket)
        case .snapshot(let ticket):
            out.append(.replySnapshot(ticket, closed ? nil : snapshot()))
        case .drain:
            for member in members.values {
                if let socket = member.connection { out.append(.closeSocket(connection: socket, code: CloseCode.draining, reason: "server draining; resume")) }
            }
            refuseWaitingJoins(ProtocolError(.providerUnavailable, "the server is draining; try another node"))
        case .fence:
            guard !closed else { return }
            for member in members.values {
                if let socket = member.connection {
                    out.append(.closeSocket(connection: socket, code: CloseCode.draining, reason: "this node stopped serving; resume"))
                }
            }
            closed = true
            releaseSFUWaiters()
            out.append(.ended)
        case .relay(let output):
            guard !closed else { return }
            relayOutput(output)
        case .lease(let held):
            holdsLease = held
        case let .sfuPrepared(attempt, result):
            sfuPrepared(attempt: attempt, result)
        case let .storeMoved(live, reason):
            // Another writer moved the session first: everybody follows the store's provider and epoch.
            let previous = arbiter.provider ?? live.name
            guard !closed, arbiter.adopt(provider: live.name, epoch: live.epoch, now: now) else { return }
            announceSwitch(to: live.name, epoch: live.epoch, previous: previous, reason: reason, except: nil)
        }
    }

    // MARK: Join and resume

    /// Starts a join: its outcome now, or after a read, or later when it waits for the SFU service.
    mutating func startJoin(_ arrival: JoinArrival) {
        if let resume = arrival.request.resume {
            guard let member = members[resume.participant], member.resumeKey == resume.key, resume.lastSeq < member.nextSeq else {
                return finishJoin(arrival.ticket, .rejected(Self.resumeRefused))
            }
            preparing = Preparing(arrival: arrival, actions: [])
            return out.append(.read(.resumeLog(arrival.ticket, resume.participant, after: resume.lastSeq)))
        }
        var actions: [ArbiterAction] = []
        // The same identity joining again replaces its older participant; the session goes on even if
        // that participant was alone in it.
        if let identity = arrival.identity, let old = members.first(where: { $0.value.identity == identity })?.key {
            actions += arbiter.leave(old, reason: .replaced).filter { $0 != .sessionEnded }
        }
        preparing = Preparing(arrival: arrival, actions: actions)
        out.append(.read(.scores(arrival.ticket)))
    }

    static let resumeRefused = ProtocolError(.resumeFailed, "cannot resume: join afresh", ref: "join")

    private mutating func continueJoin(_ waiting: Preparing, _ answer: StoreAnswer) {
        preparing = nil
        let arrival = waiting.arrival
        switch answer {
        case .resumeLog(let missed):
            guard let missed else { return finishJoin(arrival.ticket, .rejected(Self.resumeRefused)) }
            finishJoin(arrival.ticket, resume(arrival, missed: missed))
        case .scores(let scores):
            let offered = arrival.request.providers ?? Set(ProviderName.allCases)
            guard arbiter.provider == nil else { return decideJoin(waiting, scores: scores, current: nil) }
            guard let proposed = arbiter.proposal(offered: offered, scores: scores) else {
                perform(waiting.actions)
                return finishJoin(arrival.ticket, .rejected(ProtocolError(.providerUnavailable, "none of the offered providers is enabled on this server")))
            }
            preparing = Preparing(arrival: arrival, actions: waiting.actions, scores: scores)
            out.append(.read(.claim(arrival.ticket, proposed: proposed)))
        case .claimed(let state):
            decideJoin(waiting, scores: waiting.scores ?? ProviderScores(), current: state)
        case .failed where arrival.request.resume != nil:
            finishJoin(arrival.ticket, .rejected(Self.resumeRefused))
        case .failed:
            out.append(.log(.error, "store failed during join", [:]))
            perform(waiting.actions)
            finishJoin(arrival.ticket, .rejected(ProtocolError(.internal, "the session store is unavailable")))
        }
    }

    private mutating func decideJoin(_ waiting: Preparing, scores: ProviderScores, current: ProviderState?) {
        perform(waiting.actions)
        let offered = waiting.arrival.request.providers ?? Set(ProviderName.allCases)
        let joining = ParkedJoin(arrival: waiting.arrival, offered: offered, scores: scores, current: current, since: sfuAttempts)
        if env.sfuName != nil, arbiter.joinNeedsSFU(offered: offered, chosen: current?.name), !sfuReady(joining: joining.id) {
            // The joiner lands on the SFU: its room and the joiner's token come first, made off the session's task.
            parkedJoin = joining
            return startSFU()
        }
        finishJoin(joining.arrival.ticket, admit(joining))
    }

    /// Answers a join. Nobody in the session and nothing waiting on it: a refused join leaves no live
    /// session behind (a claim it made in the store ends too), before the joiner hears of it.
    mutating func finishJoin(_ ticket: Ticket, _ result: JoinResult) {
        if case .rejected = result, !closed, members.isEmpty, arbiter.isEmpty, parkedJoin == nil, queuedJoins.isEmpty {
            perform([.sessionEnded])
        }
        out.append(.replyJoin(ticket, result))
    }

    /// Admits a joiner whose SFU room and token, if it lands there, exist.
    mutating func admit(_ joining: ParkedJoin) -> JoinResult {
        let id = joining.id
        let arrival = joining.arrival
        var actions: [ArbiterAction] = []
        if env.sfuName != nil, arbiter.joinNeedsSFU(offered: joining.offered, chosen: joining.current?.name), sfuReady(joining: id) {
            actions += arbiter.sfuReadiness(true, now: now)
        }
        let decision = arbiter.join(
            id, name: arrival.request.name, offered: joining.offered, scores: joining.scores, now: now,
            current: joining.current.map { ($0.name, $0.epoch) })
        guard case let .admitted(_, _, _, joinActions) = decision else {
            sfuTokens[id] = nil
            perform(actions)
            if case .rejected(let error) = decision { return .rejected(error) }
            return .rejected(ProtocolError(.internal, "join failed"))
        }
        // The switch a third joiner causes must be settled before the welcome shows its epoch.
        actions += joinActions
        members[id] = Member(connection: arrival.connection, resumeKey: arrival.resumeKey, identity: arrival.identity)
        perform(actions.filter { if case .switchProvider = $0 { return true } else { return false } }, except: id)
        sendWelcome(id, resumeKey: arrival.resumeKey, resumed: false)
        broadcast(.peerJoined(PeerInfo(id: id, name: arrival.request.name)), except: id)
        perform(actions.filter { if case .switchProvider = $0 { return false } else { return true } })
        out.append(.metric(.joined(receivedAt: arrival.receivedAt)))
        out.append(.write(.presence(presence(id, state: .active))))
        return .joined(id)
    }

    private mutating func resume(_ arrival: JoinArrival, missed: [[UInt8]]) -> JoinResult {
        // The member may have left while the log was read.
        guard let resume = arrival.request.resume, let member = members[resume.participant], member.resumeKey == resume.key else {
            return .rejected(Self.resumeRefused)
        }
        let id = resume.participant
        if let old = member.connection, old != arrival.connection {
            out.append(.closeSocket(connection: old, code: CloseCode.replaced, reason: "replaced by a newer connection"))
        }
        members[id]?.connection = arrival.connection
        // The missed frames go as they were sent: not numbered again, not logged again.
        for frame in missed { out.append(.resend(connection: arrival.connection, frame)) }
        sendWelcome(id, resumeKey: member.resumeKey, resumed: true)
        perform(arbiter.resumed(id, now: now))
        out.append(.write(.presence(presence(id, state: .active))))
        return .joined(id)
    }

    /// An operator's switch, with the SFU's room and tokens made if it goes there.
    mutating func forceSwitch(to name: ProviderName, _ ticket: Ticket) {
        if name == .sfu, env.sfuName != nil, arbiter.provider != nil {
            // A switch that was waiting for the SFU room happens now, and is the one asked for.
            let waited = arbiter.sfuReadiness(true, now: now)
            if !waited.isEmpty {
                perform(waited)
                return out.append(.replySwitch(ticket, .success(ProviderState(name: .sfu, epoch: arbiter.epoch))))
            }
        }
        switch arbiter.forceSwitch(to: name, now: now) {
        case .failure(let error): out.append(.replySwitch(ticket, .failure(error)))
        case .success(let actions):
            perform(actions)
            out.append(.replySwitch(ticket, .success(ProviderState(name: arbiter.provider ?? name, epoch: arbiter.epoch))))
        }
    }

    // MARK: Messages

    private mutating func handleMessage(_ id: ParticipantID, _ message: ClientMessage) {
        arbiter.activity(id, now: now)
        switch message {
        case .join:
            sendError(id, ProtocolError(.alreadyJoined, "this socket has joined already", ref: "join"))
        case .signal(let signal):
            relay(id, signal)
        case .health(let report):
            out.append(.metric(.healthReport))
            if shouldRecord(report, of: id) {
                out.append(.write(.health(HealthSample(participant: id, report: report, atMs: wallMs))))
            }
            if holdsLease { perform(arbiter.health(id, report, now: now)) }
        case .ping(let t):
            send(id, .pong(t: t))
        case .leave:
            perform(arbiter.leave(id, reason: .left))
        }
    }

    /// A report is kept in the store when it is for the current epoch and changes the media state, or
    /// the participant's last kept one is a second old: a client that reports as fast as it can costs the
    /// store one row a second.
    private mutating func shouldRecord(_ report: HealthReport, of id: ParticipantID) -> Bool {
        guard report.epoch == arbiter.epoch, report.provider == arbiter.provider else { return false }
        if let last = lastRecorded[id], last.media == report.media, now - last.at < Self.healthSampleInterval { return false }
        lastRecorded[id] = (now, report.media)
        return true
    }

    static let healthSampleInterval: Duration = .seconds(1)

    private mutating func relay(_ from: ParticipantID, _ signal: SignalRequest) {
        guard signal.to == .server || (signal.to != from && members[signal.to] != nil) else {
            return sendError(from, ProtocolError(.unknownPeer, "no participant \(signal.to.rawValue.prefix(64)) in this session", ref: "signal"))
        }
        guard signal.epoch == arbiter.epoch else {
            return sendError(from, ProtocolError(.staleEpoch, "epoch \(signal.epoch) is not the session's epoch \(arbiter.epoch)", ref: "signal"))
        }
        if signal.kind == .candidate, let i = members.index(forKey: from) {
            // In place: one lookup, no copy of the member, per candidate.
            if members.values[i].candidateEpoch != signal.epoch {
                members.values[i].candidateEpoch = signal.epoch
                members.values[i].candidateCount = 0
            }
            members.values[i].candidateCount += 1
            guard members.values[i].candidateCount <= config.maxCandidatesPerEpoch else {
                return sendError(from, ProtocolError(.rateLimited, "more than \(config.maxCandidatesPerEpoch) candidates in one epoch", ref: "signal"))
            }
        }
        if signal.to == .server { return signalRelay(from, signal) }
        send(signal.to, .signal(from: from, rawData: signal.rawData))
    }

    // MARK: Actions

    mutating func perform(_ actions: [ArbiterAction], except joiner: ParticipantID? = nil) {
        for action in actions {
            switch action {
            case let .switchProvider(to, epoch, previous, reason):
                out.append(.write(.switchProvider(expectedEpoch: epoch - 1, to: to, reason: reason, atMs: wallMs)))
                announceSwitch(to: to, epoch: epoch, previous: previous, reason: reason, except: joiner)
            case let .adjustScore(provider, delta):
                out.append(.write(.adjustScore(provider, delta: delta)))
            case let .peerState(id, state):
                broadcast(.peerState(peer: id, state: state), except: id)
            case let .removeParticipant(id, reason):
                removeMember(id, reason: reason)
                out.append(.write(.removeParticipant(id)))
            case .sessionEnded:
                endSFU()
                out.append(.write(.endSession(atMs: wallMs)))
                out.append(.write(.releaseHome))
                closed = true
                out.append(.ended)
                releaseSFUWaiters()
            case let .quality(id, score, level):
                broadcast(.quality(participant: id, score: score, level: level))
            case let .video(id, maxHeight, reason):
                send(id, .video(maxHeight: maxHeight, reason: reason))
            case let .alert(kind, id, value):
                broadcast(.alert(kind: kind, participant: id, value: value, detail: kind == .sfuUnavailable ? sfuError?.description : nil))
                out.append(.write(.alert(AlertRecord(kind: kind, participant: id, value: value, atMs: wallMs))))
            case .prepareSFU:
                sfuError = nil
                startSFU()
            }
        }
    }

    private mutating func announceSwitch(to name: ProviderName, epoch: Int, previous: ProviderName, reason: SwitchReason, except joiner: ParticipantID?) {
        out.append(.metric(.switched(reason)))
        out.append(.log(.info, "provider switch", ["to": "\(name)", "epoch": "\(epoch)", "reason": "\(reason)"]))
        for id in arbiter.order where id != joiner {
            send(id, .provider(providerInfo(for: id, name: name, epoch: epoch), reason: reason, previous: previous))
        }
    }

    private mutating func removeMember(_ id: ParticipantID, reason: LeaveReason) {
        guard let member = members.removeValue(forKey: id) else { return }
        sfuTokens[id] = nil
        lastRecorded[id] = nil
        if relayEpoch != nil { out.append(.relay(.remove(id))) }
        relayStats[id] = nil
        out.append(.metric(.left))
        broadcast(.peerLeft(peer: id, reason: reason))
        let code: UInt16 =
            switch reason {
            case .left, .timeout: CloseCode.normal
            case .replaced: CloseCode.replaced
            case .kicked: CloseCode.forbidden
            }
        if let socket = member.connection { out.append(.closeSocket(connection: socket, code: code, reason: reason.rawValue)) }
    }

    // MARK: Sending

    /// Frames `message` with the participant's next sequence number, for its socket and its resume log.
    mutating func send(_ id: ParticipantID, _ message: ServerMessage) {
        guard let i = members.index(forKey: id) else { return }
        let seq = members.values[i].nextSeq
        members.values[i].nextSeq += 1
        var error: ErrorCode?
        if case .error(let e) = message { error = e.code }
        out.append(
            .send(
                connection: members.values[i].connection, LoggedMessage(participant: id, seq: seq, frame: message.encoded(seq: seq)),
                type: message.type, error: error))
    }

    /// The session as `id` joins or resumes it.
    mutating func sendWelcome(_ id: ParticipantID, resumeKey: String, resumed: Bool) {
        send(
            id,
            .welcome(
                session: session, participant: id, resumeKey: resumeKey, peers: peers(except: id),
                provider: providerInfo(for: id, name: arbiter.provider ?? .p2p, epoch: arbiter.epoch),
                heartbeatIntervalMs: config.heartbeatInterval.milliseconds, heartbeatTimeoutMs: config.heartbeatTimeout.milliseconds,
                serverVersion: config.version, node: config.node, resumed: resumed))
    }

    mutating func sendError(_ id: ParticipantID, _ error: ProtocolError) {
        send(id, .error(error))
    }

    mutating func broadcast(_ message: ServerMessage, except: ParticipantID? = nil) {
        for id in arbiter.order where id != except { send(id, message) }
    }

    // MARK: Views

    private func peers(except id: ParticipantID) -> [PeerInfo] {
        arbiter.order.filter { $0 != id }.map { PeerInfo(id: $0, name: arbiter.participants[$0]?.name) }
    }

    func providerInfo(for id: ParticipantID, name: ProviderName, epoch: Int) -> ProviderInfo {
        ProviderInfo(
            name: name, epoch: epoch, room: session, polite: name == .p2p ? (arbiter.participants[id]?.polite ?? true) : true,
            iceServers: env.iceServers.servers(for: members[id]?.identity ?? id.rawValue, nowUnix: wallMs / 1000),
            sfu: name == .sfu ? sfuAccess(for: id) : nil)
    }

    private func presence(_ id: ParticipantID, state: PeerConnectionState) -> PresenceRecord {
        PresenceRecord(participant: id, name: arbiter.participants[id]?.name, state: state, node: config.node, lastSeenMs: wallMs)
    }

    private func snapshot() -> SessionSnapshot {
        SessionSnapshot(
            provider: arbiter.provider, epoch: arbiter.epoch,
            participants: arbiter.order.compactMap { id in
                guard let p = arbiter.participants[id] else { return nil }
                return ParticipantSnapshot(
                    id: id, name: p.name, state: p.socketOpen ? .active : .reconnecting,
                    lastSeenMs: wallMs - Int64((now - p.lastSeen).milliseconds), health: p.lastReport, qualityLevel: p.qualityLevel,
                    maxVideoHeight: p.video.maxHeight, relay: relayStats[id])
            })
    }
}
