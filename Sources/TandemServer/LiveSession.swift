import Logging
import Prometheus
import TandemArbiter
import TandemMedia
import TandemMediaCore
import TandemProtocol
import TandemSFU
import TandemStore

/// A socket's request to join, with what the socket layer already checked.
struct JoinContext: Sendable {
    var request: JoinRequest
    /// The verified token identity, when the join carried a token.
    var identity: String?
    var connection: Connection
    var receivedAt: ContinuousClock.Instant
}

enum JoinOutcome: Sendable {
    case joined(ParticipantID, LiveSession)
    /// Refused; the socket stays open and unjoined unless the code calls for a close.
    case rejected(ProtocolError)
    /// The live session closed meanwhile: ask the hub again.
    case retry
}

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

enum SessionEvent: Sendable {
    case join(JoinContext, CheckedContinuation<JoinOutcome, Never>)
    case message(ParticipantID, connection: UInt64, ClientMessage)
    case socketClosed(ParticipantID, connection: UInt64)
    /// The socket layer refused a message of a joined participant.
    case reject(ParticipantID, connection: UInt64, ProtocolError)
    /// Close a participant's socket once what was queued before is sent.
    case close(ParticipantID, connection: UInt64, code: UInt16, reason: String)
    case tick
    case forceSwitch(ProviderName, CheckedContinuation<Result<ProviderState, ProtocolError>, Never>)
    case snapshot(CheckedContinuation<SessionSnapshot?, Never>)
    case drain
    /// What the media relay's leg for a participant said (answers, candidates, media state).
    case relay(RelayOutput)
    /// A background preparation of the session's SFU room and tokens ended.
    case sfuPrepared(attempt: Int, Result<SFUMade, SFUError>)
}

/// One live session on this node. Every event for it goes through one mailbox and is handled by one
/// task in arrival order, so the arbiter, sequence numbers and store writes of a session never race, and
/// a busy session never holds up another.
final class LiveSession: Sendable {
    let session: SessionID
    private let mailbox: AsyncStream<SessionEvent>.Continuation

    init(session: SessionID, hub: SignalingHub, lastEpoch: Int) {
        self.session = session
        let (stream, continuation) = AsyncStream<SessionEvent>.makeStream()
        mailbox = continuation
        let core = LiveSessionCore(session: session, hub: hub, lastEpoch: lastEpoch)
        hub.metrics.sessionTasks.increment()
        Task { [self] in
            await core.run(stream, live: self)
            hub.metrics.sessionTasks.decrement()
        }
    }

    /// Queues an event; false if the live session has closed.
    @discardableResult
    func post(_ event: SessionEvent) -> Bool {
        if case .terminated = mailbox.yield(event) { return false }
        return true
    }

    func finishMailbox() { mailbox.finish() }
}

/// The state of one live session, confined to its task.
final class LiveSessionCore {
    struct Member {
        var connection: Connection?
        var nextSeq = 1
        let resumeKey: String
        let identity: String?
        var candidateEpoch = -1
        var candidateCount = 0
    }

    let session: SessionID
    let hub: SignalingHub
    var arbiter: SessionArbiter
    var members: [ParticipantID: Member] = [:]
    var closed = false
    var logger: Logger
    /// The session's relay while its provider is `relay`, for the epoch it was opened at.
    var relaySession: RelaySessionHandle?
    /// The relay's latest figures per participant, for the admin view.
    var relayStats: [ParticipantID: RelayLegStats] = [:]
    /// The session's SFU room and the participants' tokens for it, made ahead of a switch.
    var sfuRoom: SFURoom?
    var sfuTokens: [ParticipantID: String] = [:]
    /// A preparation under way in the background, by attempt number.
    var sfuTask: (attempt: Int, task: Task<Result<SFUMade, SFUError>, Never>)?
    /// Preparations started, in the background or waited for; after one, the service may hold a room for
    /// this session (even one whose tokens failed).
    var sfuAttempts = 0
    /// When each participant's last health report was kept in the store, and its media state.
    var lastRecorded: [ParticipantID: (at: Instant, media: MediaState)] = [:]
    /// The SFU service's last failure, until the arbiter asks for the room again.
    var sfuError: SFUError?
    /// The last preparation that failed, by number (a waiter fails with one that began after it).
    var lastSFUFailure: (attempt: Int, error: SFUError)?
    /// A join waiting for the SFU service; the joins that came after it wait in order behind it.
    var parkedJoin: ParkedJoin?
    var queuedJoins: [(JoinContext, CheckedContinuation<JoinOutcome, Never>)] = []
    /// Operators' switches to the SFU waiting for its room.
    var switchWaiters: [(since: Int, reply: CheckedContinuation<Result<ProviderState, ProtocolError>, Never>)] = []

    init(session: SessionID, hub: SignalingHub, lastEpoch: Int) {
        self.session = session
        self.hub = hub
        arbiter = SessionArbiter(session: session, config: hub.config.arbiter, lastEpoch: lastEpoch)
        logger = hub.logger
        logger[metadataKey: "session"] = "\(session)"
    }

    /// Frames sent while handling the current event, written to the store's resume log after it.
    var pendingLog: [LoggedMessage] = []

    /// The live session whose mailbox feeds this core, for work that reports back to it.
    weak var liveSession: LiveSession?

    func run(_ events: AsyncStream<SessionEvent>, live: LiveSession) async {
        liveSession = live
        for await event in events {
            await handle(event, live: live)
            syncRelay(live: live)
            await syncSFU(live: live)
            if !pendingLog.isEmpty {
                do {
                    try await hub.store.appendMessages(session, pendingLog)
                } catch {
                    logger.error("store failed to log messages for resume", metadata: ["error": "\(error)"])
                }
                pendingLog.removeAll(keepingCapacity: true)
            }
        }
    }

    private func handle(_ event: SessionEvent, live: LiveSession) async {
        switch event {
        case let .join(context, reply):
            guard !closed else { return reply.resume(returning: .retry) }
            // A resume needs nothing of the SFU service, so it never queues behind a join that does.
            guard context.request.resume != nil || (parkedJoin == nil && queuedJoins.isEmpty) else {
                guard queuedJoins.count < hub.config.arbiter.maxParticipants else {
                    return reply.resume(returning: .rejected(ProtocolError(.sessionFull, "too many joins are waiting for this session")))
                }
                return queuedJoins.append((context, reply))
            }
            await startJoin(context, reply, live: live)
        case let .message(id, connection, message):
            guard !closed, members[id]?.connection?.id == connection else { return }
            await handleMessage(id, message)
        case let .socketClosed(id, connection):
            guard !closed, let member = members[id], member.connection?.id == connection else { return }
            members[id]?.connection = nil
            await perform(arbiter.disconnected(id, now: hub.now()))
            try? await hub.store.upsertPresence(session, presence(id, state: .reconnecting))
        case let .reject(id, connection, error):
            guard !closed, members[id]?.connection?.id == connection else { return }
            arbiter.activity(id, now: hub.now())
            sendError(id, error)
        case let .close(id, connection, code, reason):
            guard let socket = members[id]?.connection, socket.id == connection else { return }
            socket.close(code: code, reason: reason)
        case .tick:
            guard !closed else { return }
            await perform(arbiter.tick(now: hub.now()))
            renewSFURoom(live: live)
        case let .forceSwitch(name, reply):
            guard !closed else { return reply.resume(returning: .failure(ProtocolError(.notJoined, "the session has ended"))) }
            if name == .sfu, hub.sfu != nil, arbiter.provider != nil, !sfuReady() {
                // The SFU room and tokens are made off this task; the switch happens when they exist.
                return awaitSFU(switching: reply, live: live)
            }
            await forceSwitch(to: name, reply)
        case .snapshot(let reply):
            reply.resume(returning: closed ? nil : snapshot())
        case .drain:
            for member in members.values { member.connection?.close(code: CloseCode.draining, reason: "server draining; resume") }
            await refuseWaitingJoins(ProtocolError(.providerUnavailable, "the server is draining; try another node"))
        case .relay(let output):
            guard !closed else { return }
            await relayOutput(output)
        case let .sfuPrepared(attempt, result):
            await sfuPrepared(attempt: attempt, result)
        }
    }

    // MARK: Join and resume

    /// Starts a join: its outcome now, or later when it waits for the SFU service.
    func startJoin(_ context: JoinContext, _ reply: CheckedContinuation<JoinOutcome, Never>, live: LiveSession) async {
        guard let outcome = await join(context, reply, live: live) else { return }
        await finishJoin(outcome, reply)
    }

    /// Answers a join. Nobody in the session and nothing waiting on it: a refused join leaves no live session
    /// behind (a claim it made in the store ends too), before the joiner hears of it.
    func finishJoin(_ outcome: JoinOutcome, _ reply: CheckedContinuation<JoinOutcome, Never>) async {
        if case .rejected = outcome, !closed, members.isEmpty, arbiter.isEmpty, parkedJoin == nil, queuedJoins.isEmpty {
            await perform([.sessionEnded])
        }
        reply.resume(returning: outcome)
    }

    /// Nil when the join waits for the SFU service (`parkedJoin` holds it and its reply).
    private func join(_ context: JoinContext, _ reply: CheckedContinuation<JoinOutcome, Never>, live: LiveSession) async -> JoinOutcome? {
        let request = context.request
        if let resume = request.resume {
            return await self.resume(resume, context, live: live)
        }
        var actions: [ArbiterAction] = []
        // The same identity joining again replaces its older participant; the session goes on even if
        // that participant was alone in it.
        if let identity = context.identity, let old = members.first(where: { $0.value.identity == identity })?.key {
            actions += arbiter.leave(old, reason: .replaced).filter { $0 != .sessionEnded }
        }
        let offered = request.providers ?? Set(ProviderName.allCases)
        var current: (ProviderName, Int)?
        let scores: ProviderScores
        do {
            scores = try await hub.store.scores()
            if arbiter.provider == nil {
                guard let proposed = arbiter.proposal(offered: offered, scores: scores) else {
                    await perform(actions)
                    return .rejected(ProtocolError(.providerUnavailable, "none of the offered providers is enabled on this server"))
                }
                let claimed = try await hub.store.claimProvider(session, proposed: proposed, atMs: hub.wallMs())
                current = (claimed.name, claimed.epoch)
            }
        } catch {
            logger.error("store failed during join", metadata: ["error": "\(error)"])
            await perform(actions)
            return .rejected(ProtocolError(.internal, "the session store is unavailable"))
        }
        await perform(actions)
        let joining = ParkedJoin(
            id: hub.newParticipantID(), context: context, reply: reply, offered: offered, scores: scores, current: current,
            since: sfuAttempts)
        if hub.sfu != nil, arbiter.joinNeedsSFU(offered: offered, chosen: current?.0), !sfuReady(joining: joining.id) {
            // The joiner lands on the SFU: its room and the joiner's token come first, made off this task.
            park(joining, live: live)
            return nil
        }
        return await admit(joining, live: live)
    }

    /// Admits a joiner whose SFU room and token, if it lands there, exist.
    func admit(_ joining: ParkedJoin, live: LiveSession) async -> JoinOutcome {
        let id = joining.id
        var actions: [ArbiterAction] = []
        if hub.sfu != nil, arbiter.joinNeedsSFU(offered: joining.offered, chosen: joining.current?.0), sfuReady(joining: id) {
            actions += arbiter.sfuReadiness(true, now: hub.now())
        }
        let decision = arbiter.join(
            id, name: joining.context.request.name, offered: joining.offered, scores: joining.scores, now: hub.now(), current: joining.current)
        guard case let .admitted(_, _, _, joinActions) = decision else {
            sfuTokens[id] = nil
            await perform(actions)
            if case .rejected(let error) = decision { return .rejected(error) }
            return .rejected(ProtocolError(.internal, "join failed"))
        }
        // The switch a third joiner causes must be settled before the welcome shows its epoch.
        actions += joinActions
        let member = Member(connection: joining.context.connection, resumeKey: hub.newResumeKey(), identity: joining.context.identity)
        members[id] = member
        await perform(actions.filter { if case .switchProvider = $0 { return true } else { return false } }, except: id)
        sendWelcome(id, resumeKey: member.resumeKey, resumed: false)
        broadcast(.peerJoined(PeerInfo(id: id, name: joining.context.request.name)), except: id)
        await perform(actions.filter { if case .switchProvider = $0 { return false } else { return true } })
        hub.metrics.participants.increment()
        hub.metrics.joinLatency.record(ContinuousClock.now - joining.context.receivedAt)
        try? await hub.store.upsertPresence(session, presence(id, state: .active))
        return .joined(id, live)
    }

    /// An operator's switch, with the SFU's room and tokens made if it goes there.
    func forceSwitch(to name: ProviderName, _ reply: CheckedContinuation<Result<ProviderState, ProtocolError>, Never>) async {
        if name == .sfu, hub.sfu != nil, arbiter.provider != nil {
            // A switch that was waiting for the SFU room happens now, and is the one asked for.
            let waited = arbiter.sfuReadiness(true, now: hub.now())
            if !waited.isEmpty {
                await perform(waited)
                return reply.resume(returning: .success(ProviderState(name: .sfu, epoch: arbiter.epoch)))
            }
        }
        switch arbiter.forceSwitch(to: name, now: hub.now()) {
        case .failure(let error): reply.resume(returning: .failure(error))
        case .success(let actions):
            await perform(actions)
            reply.resume(returning: .success(ProviderState(name: arbiter.provider ?? name, epoch: arbiter.epoch)))
        }
    }

    private func resume(_ resume: ResumeRequest, _ context: JoinContext, live: LiveSession) async -> JoinOutcome {
        let refused = ProtocolError(.resumeFailed, "cannot resume: join afresh", ref: "join")
        guard let member = members[resume.participant], member.resumeKey == resume.key, resume.lastSeq < member.nextSeq else {
            return .rejected(refused)
        }
        guard let missed = try? await hub.store.messages(session, resume.participant, after: resume.lastSeq) else {
            return .rejected(refused)
        }
        let id = resume.participant
        if let old = member.connection, old.id != context.connection.id {
            old.close(code: CloseCode.replaced, reason: "replaced by a newer connection")
        }
        members[id]?.connection = context.connection
        for frame in missed { context.connection.send(frame) }
        sendWelcome(id, resumeKey: member.resumeKey, resumed: true)
        await perform(arbiter.resumed(id, now: hub.now()))
        try? await hub.store.upsertPresence(session, presence(id, state: .active))
        return .joined(id, live)
    }

    // MARK: Messages

    private func handleMessage(_ id: ParticipantID, _ message: ClientMessage) async {
        arbiter.activity(id, now: hub.now())
        switch message {
        case .join:
            sendError(id, ProtocolError(.alreadyJoined, "this socket has joined already", ref: "join"))
        case .signal(let signal):
            relay(id, signal)
        case .health(let report):
            hub.metrics.healthReports.increment()
            if shouldRecord(report, of: id) {
                try? await hub.store.recordHealth(session, HealthSample(participant: id, report: report, atMs: hub.wallMs()))
            }
            await perform(arbiter.health(id, report, now: hub.now()))
        case .ping(let t):
            send(id, .pong(t: t))
        case .leave:
            await perform(arbiter.leave(id, reason: .left))
        }
    }

    /// A report is kept in the store when it is for the current epoch and changes the media state, or
    /// the participant's last kept one is a second old: a client that reports as fast as it can costs the
    /// store one row a second.
    private func shouldRecord(_ report: HealthReport, of id: ParticipantID) -> Bool {
        guard report.epoch == arbiter.epoch, report.provider == arbiter.provider else { return false }
        let now = hub.now()
        if let last = lastRecorded[id], last.media == report.media, now - last.at < Self.healthSampleInterval { return false }
        lastRecorded[id] = (now, report.media)
        return true
    }

    static let healthSampleInterval: Duration = .seconds(1)

    private func relay(_ from: ParticipantID, _ signal: SignalRequest) {
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
            guard members.values[i].candidateCount <= hub.config.maxCandidatesPerEpoch else {
                return sendError(
                    from, ProtocolError(.rateLimited, "more than \(hub.config.maxCandidatesPerEpoch) candidates in one epoch", ref: "signal"))
            }
        }
        if signal.to == .server { return signalRelay(from, signal) }
        send(signal.to, .signal(from: from, rawData: signal.rawData))
    }

    // MARK: The media relay

    /// A signal for the server's own media endpoint, for the current epoch.
    private func signalRelay(_ from: ParticipantID, _ signal: SignalRequest) {
        guard arbiter.provider == .relay, let relaySession, relaySession.epoch == arbiter.epoch else {
            return sendError(from, ProtocolError(.providerUnavailable, "the server's media endpoint serves only provider relay", ref: "signal"))
        }
        let input: RelayInput
        switch signal.kind {
        case .offer, .answer:
            // The decoder refuses an offer or answer without a string `sdp`.
            let sdp = signal.data["sdp"]?.stringValue ?? ""
            input = signal.kind == .offer ? .offer(sdp: sdp) : .answer(sdp: sdp)
        case .candidate:
            // `candidate` is an RTCIceCandidateInit ({candidate, sdpMid, …}) or the bare attribute string.
            guard let value = signal.data["candidate"]?["candidate"]?.stringValue ?? signal.data["candidate"]?.stringValue else {
                return sendError(from, ProtocolError(.badMessage, "a candidate needs candidate.candidate", ref: "signal"))
            }
            // An empty candidate is the browser's end of candidates.
            input = value.isEmpty ? .endOfCandidates : .candidate(value)
        case .endOfCandidates:
            input = .endOfCandidates
        case .restart:
            // Each relay epoch has fresh legs, so there is no ICE restart to make: the client offers anew.
            return
        }
        relaySession.signal(from: from.rawValue, input)
    }

    /// How long a relay epoch's legs outlive a switch away from them.
    static let relayGrace: Duration = .seconds(10)

    /// Opens the relay when the session is on it, and closes it when the session leaves it or its epoch.
    func syncRelay(live: LiveSession) {
        let wanted = !closed && arbiter.provider == .relay
        if let open = relaySession, !wanted || open.epoch != arbiter.epoch {
            relaySession = nil
            relayStats = [:]
            if closed {
                open.close()
            } else {
                // Make before break: the old legs carry the call until the clients' new paths do (the
                // client library closes its old path once the new one has media).
                Task { [open] in
                    try? await Task.sleep(for: LiveSessionCore.relayGrace)
                    open.close()
                }
            }
        }
        guard wanted, relaySession == nil, let relay = hub.relay else { return }
        relaySession = relay.open(session: session.rawValue, epoch: arbiter.epoch) { [weak live] output in
            live?.post(.relay(output))
        }
    }

    private func relayOutput(_ output: RelayOutput) async {
        let (participant, epoch) = output.leg
        if case let .media(_, _, connected, error) = output {
            logger.info(
                "relay leg \(connected ? "connected" : "failed")",
                metadata: ["participant": "\(participant)", "epoch": "\(epoch)", "error": "\(error?.description ?? "-")"])
        }
        // What a leg says matters only for the session's current epoch and a participant still in it.
        let id = ParticipantID(participant)
        guard epoch == arbiter.epoch, members[id] != nil else { return }
        func signal(_ kind: String, capacity: Int = 128, _ body: (inout JSONWriter) -> Void = { _ in }) {
            var w = JSONWriter(capacity: capacity)
            w.beginObject()
            w.member("kind", kind)
            body(&w)
            w.member("epoch", epoch)
            w.endObject()
            send(id, .signal(from: .server, rawData: w.bytes))
        }
        switch output {
        case .answer(_, _, let sdp):
            signal("answer", capacity: sdp.utf8.count + 96) { $0.member("sdp", sdp) }
        case .offer(_, _, let sdp):
            signal("offer", capacity: sdp.utf8.count + 96) { $0.member("sdp", sdp) }
        case let .candidate(_, _, candidate, mid, mLineIndex):
            signal("candidate", capacity: candidate.utf8.count + 128) { w in
                w.key("candidate")
                w.beginObject()
                w.member("candidate", candidate)
                w.member("sdpMid", mid)
                w.member("sdpMLineIndex", mLineIndex)
                w.endObject()
            }
        case .endOfCandidates:
            signal("end-of-candidates")
        case .rejected(_, _, let error):
            sendError(id, ProtocolError(.badMessage, "the relay cannot use this signal: \(error.message) (\(error.code.rawValue))", ref: "signal"))
        case .stats(_, _, let stats):
            relayStats[id] = stats
            guard stats.lossPct != nil || stats.rttMs != nil || stats.jitterMs != nil else { return }
            let measured = HealthReport(
                epoch: epoch, provider: .relay, media: .connected, rttMs: stats.rttMs, lossPct: stats.lossPct, jitterMs: stats.jitterMs)
            await perform(arbiter.measured(id, measured, now: hub.now()))
        case .media(_, _, let connected, _):
            // A failed leg fails the participant's epoch, as its own `failed` report would.
            guard !connected else { return }
            await perform(arbiter.mediaFailed(id, epoch: epoch, provider: .relay, now: hub.now()))
        }
    }

    // MARK: Actions

    func perform(_ actions: [ArbiterAction], except joiner: ParticipantID? = nil) async {
        for action in actions {
            switch action {
            case let .switchProvider(to, epoch, previous, reason):
                await switchProvider(to: to, epoch: epoch, previous: previous, reason: reason, except: joiner)
            case let .adjustScore(provider, delta):
                _ = try? await hub.store.adjustScore(provider, delta: delta)
            case let .peerState(id, state):
                broadcast(.peerState(peer: id, state: state), except: id)
            case let .removeParticipant(id, reason):
                removeMember(id, reason: reason)
                pendingLog.removeAll { $0.participant == id }
                try? await hub.store.removePresence(session, id)
                try? await hub.store.dropMessages(session, id)
            case .sessionEnded:
                await endSFU()
                try? await hub.store.endSession(session, atMs: hub.wallMs())
                closed = true
                hub.sessionClosed(session)
                releaseSFUWaiters()
            case let .quality(id, score, level):
                broadcast(.quality(participant: id, score: score, level: level))
            case let .video(id, maxHeight, reason):
                send(id, .video(maxHeight: maxHeight, reason: reason))
            case let .alert(kind, id, value):
                broadcast(.alert(kind: kind, participant: id, value: value, detail: kind == .sfuUnavailable ? sfuError?.description : nil))
                try? await hub.store.recordAlert(session, AlertRecord(kind: kind, participant: id, value: value, atMs: hub.wallMs()))
            case .prepareSFU:
                sfuError = nil
                startSFU(live: liveSession)
            }
        }
    }

    private func switchProvider(to: ProviderName, epoch: Int, previous: ProviderName, reason: SwitchReason, except joiner: ParticipantID?) async {
        var name = to
        var newEpoch = epoch
        var why = reason
        do {
            let moved = try await hub.store.compareAndSetProvider(session, expectedEpoch: epoch - 1, new: to, reason: reason, atMs: hub.wallMs())
            if !moved, let live = try await hub.store.session(session)?.provider {
                // Another node moved the session first: everybody follows the store's history instead.
                _ = arbiter.adopt(provider: live.name, epoch: live.epoch, now: hub.now())
                name = live.name
                newEpoch = live.epoch
                why = try await hub.store.session(session)?.history.last?.reason ?? reason
            }
        } catch {
            logger.error("store failed during a provider switch", metadata: ["error": "\(error)"])
        }
        hub.metrics.switches[why]?.increment()
        logger.info("provider switch", metadata: ["to": "\(name)", "epoch": "\(newEpoch)", "reason": "\(why)"])
        for id in arbiter.order where id != joiner {
            send(id, .provider(providerInfo(for: id, name: name, epoch: newEpoch), reason: why, previous: previous))
        }
    }

    private func removeMember(_ id: ParticipantID, reason: LeaveReason) {
        guard let member = members.removeValue(forKey: id) else { return }
        sfuTokens[id] = nil
        lastRecorded[id] = nil
        relaySession?.remove(id.rawValue)
        relayStats[id] = nil
        hub.metrics.participants.decrement()
        broadcast(.peerLeft(peer: id, reason: reason))
        let code: UInt16 =
            switch reason {
            case .left, .timeout: CloseCode.normal
            case .replaced: CloseCode.replaced
            case .kicked: CloseCode.forbidden
            }
        member.connection?.close(code: code, reason: reason.rawValue)
    }

    // MARK: Sending

    /// Frames `message` with the participant's next sequence number, logs it for resume and writes it
    /// to the participant's socket if it has one.
    func send(_ id: ParticipantID, _ message: ServerMessage) {
        guard let i = members.index(forKey: id) else { return }
        let seq = members.values[i].nextSeq
        members.values[i].nextSeq += 1
        let connection = members.values[i].connection
        let frame = message.encoded(seq: seq)
        pendingLog.append(LoggedMessage(participant: id, seq: seq, frame: frame))
        hub.metrics.countOut(message.type)
        if case .error(let e) = message { hub.metrics.countError(e.code) }
        if connection?.send(frame) == .closedSlow { hub.metrics.slowConsumers.increment() }
    }

    /// The session as `id` joins or resumes it.
    func sendWelcome(_ id: ParticipantID, resumeKey: String, resumed: Bool) {
        send(
            id,
            .welcome(
                session: session, participant: id, resumeKey: resumeKey, peers: peers(except: id),
                provider: providerInfo(for: id, name: arbiter.provider ?? .p2p, epoch: arbiter.epoch),
                heartbeatIntervalMs: hub.config.heartbeatInterval.milliseconds,
                heartbeatTimeoutMs: hub.config.heartbeatTimeout.milliseconds,
                serverVersion: hub.config.version, node: hub.config.node, resumed: resumed))
    }

    func sendError(_ id: ParticipantID, _ error: ProtocolError) {
        send(id, .error(error))
    }

    func broadcast(_ message: ServerMessage, except: ParticipantID? = nil) {
        for id in arbiter.order where id != except { send(id, message) }
    }

    // MARK: Views

    private func peers(except id: ParticipantID) -> [PeerInfo] {
        arbiter.order.filter { $0 != id }.map { PeerInfo(id: $0, name: arbiter.participants[$0]?.name) }
    }

    func providerInfo(for id: ParticipantID, name: ProviderName, epoch: Int) -> ProviderInfo {
        ProviderInfo(
            name: name, epoch: epoch, room: session, polite: name == .p2p ? (arbiter.participants[id]?.polite ?? true) : true,
            iceServers: hub.iceServers.servers(for: members[id]?.identity ?? id.rawValue), sfu: name == .sfu ? sfuAccess(for: id) : nil)
    }

    private func presence(_ id: ParticipantID, state: PeerConnectionState) -> PresenceRecord {
        PresenceRecord(participant: id, name: arbiter.participants[id]?.name, state: state, node: hub.config.node, lastSeenMs: hub.wallMs())
    }

    private func snapshot() -> SessionSnapshot {
        let now = hub.now()
        let wall = hub.wallMs()
        return SessionSnapshot(
            provider: arbiter.provider, epoch: arbiter.epoch,
            participants: arbiter.order.compactMap { id in
                guard let p = arbiter.participants[id] else { return nil }
                return ParticipantSnapshot(
                    id: id, name: p.name, state: p.socketOpen ? .active : .reconnecting,
                    lastSeenMs: wall - Int64((now - p.lastSeen).milliseconds), health: p.lastReport, qualityLevel: p.qualityLevel,
                    maxVideoHeight: p.video.maxHeight, relay: relayStats[id])
            })
    }
}
