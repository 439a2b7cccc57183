import Logging
import Prometheus
import TandemArbiter
import TandemMedia
import TandemProtocol
import TandemSFU
import TandemStore

/// A socket's request to join, with what the socket layer already checked.
struct JoinContext: Sendable {
    var request: JoinRequest
    /// The verified token identity, when the join carried a token.
    var identity: String?
    var connection: any ParticipantSocket
    var receivedAt: ContinuousClock.Instant
    /// The join's text as the client sent it (what a bridge to the session's home node passes on).
    var raw: [UInt8] = []
}

enum JoinOutcome: Sendable {
    case joined(ParticipantID, any SessionEntry)
    /// Refused; the socket stays open and unjoined unless the code calls for a close.
    case rejected(ProtocolError)
    /// The live session closed meanwhile: ask the hub again.
    case retry
}

/// What reaches a live session's mailbox, with the replies its callers wait for.
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
    /// The node lost its lease: stop serving the session here, without ending it.
    case fence
    /// Whether the node holds its lease: without it the session decides nothing.
    case lease(held: Bool)
    case relay(RelayOutput)
    case sfuPrepared(attempt: Int, Result<SFUMade, SFUError>)
}

/// One live session on this node. Every event for it goes through one mailbox and is handled by one
/// task in arrival order, so the session's decisions, sequence numbers and store writes never race,
/// and a busy session never holds up another.
final class LiveSession: Sendable {
    let session: SessionID
    private let mailbox: AsyncStream<SessionEvent>.Continuation

    init(session: SessionID, hub: SignalingHub, lastEpoch: Int) {
        self.session = session
        let (stream, continuation) = AsyncStream<SessionEvent>.makeStream()
        mailbox = continuation
        let shell = SessionShell(session: session, hub: hub, lastEpoch: lastEpoch)
        hub.metrics.sessionTasks.increment()
        Task { [self] in
            await shell.run(stream, live: self)
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

/// The I/O of one live session, confined to its task: it turns mailbox events into ``SessionMachine``
/// inputs and performs the machine's effects in order (sockets, the store, the relay, the SFU service,
/// metrics, replies), answering the machine's store reads before it takes the next event.
final class SessionShell {
    private var machine: SessionMachine
    private let session: SessionID
    private let hub: SignalingHub
    private var logger: Logger
    private var live: LiveSession?
    /// The sockets the machine names by id.
    private var connections: [UInt64: any ParticipantSocket] = [:]
    private var nextTicket: UInt64 = 0
    private var joinReplies: [Ticket: CheckedContinuation<JoinOutcome, Never>] = [:]
    private var switchReplies: [Ticket: CheckedContinuation<Result<ProviderState, ProtocolError>, Never>] = [:]
    private var snapshotReplies: [Ticket: CheckedContinuation<SessionSnapshot?, Never>] = [:]
    /// The relay's legs for the epoch the machine opened it at.
    private var relaySession: RelaySessionHandle?
    /// SFU preparations under way, by attempt.
    private var sfuTasks: [Int: Task<Result<SFUMade, SFUError>, Never>] = [:]
    /// Frames sent while handling the current event, written to the store's resume log after it.
    private var pendingLog: [LoggedMessage] = []
    /// Health samples and alerts, written in order by a task of their own: the session never waits for
    /// them (a shared store that is away costs each call its timeout).
    private let journal: AsyncStream<StoreWrite>.Continuation

    init(session: SessionID, hub: SignalingHub, lastEpoch: Int) {
        self.session = session
        self.hub = hub
        let env = SessionMachine.Environment(
            config: hub.config, iceServers: hub.iceServers, hasRelay: hub.relay != nil, sfuName: hub.sfu?.name)
        machine = SessionMachine(session: session, env: env, lastEpoch: lastEpoch)
        logger = hub.logger
        logger[metadataKey: "session"] = "\(session)"
        let (writes, journal) = AsyncStream<StoreWrite>.makeStream(bufferingPolicy: .bufferingOldest(Self.journalQueue))
        self.journal = journal
        // Ends when `journal` is finished, after the session's last event.
        Task { [store = hub.store] in
            for await write in writes {
                switch write {
                case .health(let sample): try? await store.recordHealth(session, sample)
                case .alert(let alert): try? await store.recordAlert(session, alert)
                default: break
                }
            }
        }
    }

    /// Journal writes waiting at most; past it new ones are dropped (the store is away or too slow).
    static let journalQueue = 4096

    func run(_ events: AsyncStream<SessionEvent>, live: LiveSession) async {
        self.live = live
        for await event in events {
            await handle(input(for: event))
            if !pendingLog.isEmpty {
                do {
                    try await hub.store.appendMessages(session, pendingLog)
                } catch {
                    logger.error("store failed to log messages for resume", metadata: ["error": "\(error)"])
                }
                pendingLog.removeAll(keepingCapacity: true)
            }
            // Counted first: the set is built only when a socket may be forgotten, not per message.
            if connections.count > machine.connectionsInUseCount {
                let inUse = machine.connectionsInUse
                connections = connections.filter { inUse.contains($0.key) }
            }
        }
        self.live = nil
        journal.finish()
    }

    private func ticket() -> Ticket {
        nextTicket += 1
        return Ticket(raw: nextTicket)
    }

    private func input(for event: SessionEvent) -> SessionInput {
        switch event {
        case let .join(context, reply):
            let ticket = ticket()
            joinReplies[ticket] = reply
            connections[context.connection.id] = context.connection
            return .join(
                JoinArrival(
                    ticket: ticket, request: context.request, identity: context.identity, connection: context.connection.id,
                    receivedAt: context.receivedAt, participant: hub.newParticipantID(), resumeKey: hub.newResumeKey()))
        case let .message(id, connection, message): return .message(id, connection: connection, message)
        case let .socketClosed(id, connection): return .socketClosed(id, connection: connection)
        case let .reject(id, connection, error): return .reject(id, connection: connection, error)
        case let .close(id, connection, code, reason): return .close(id, connection: connection, code: code, reason: reason)
        case .tick: return .tick
        case let .forceSwitch(name, reply):
            let ticket = ticket()
            switchReplies[ticket] = reply
            return .forceSwitch(ticket, name)
        case .snapshot(let reply):
            let ticket = ticket()
            snapshotReplies[ticket] = reply
            return .snapshot(ticket)
        case .drain: return .drain
        case .fence: return .fence
        case .lease(let held): return .lease(held: held)
        case .relay(let output): return .relay(output)
        case let .sfuPrepared(attempt, result):
            sfuTasks[attempt] = nil
            return .sfuPrepared(attempt: attempt, result)
        }
    }

    /// Runs the machine on `first` and on what performing its effects answers (store reads, a store
    /// that moved on), before the next event.
    private func handle(_ first: SessionInput) async {
        var inputs = [first]
        while !inputs.isEmpty {
            let effects = machine.handle(inputs.removeFirst(), now: hub.now(), wallMs: hub.wallMs())
            for effect in effects {
                if let next = await perform(effect) { inputs.append(next) }
            }
        }
    }

    private func perform(_ effect: SessionEffect) async -> SessionInput? {
        switch effect {
        case let .send(connection, logged, type, error):
            pendingLog.append(logged)
            hub.metrics.countOut(type)
            if let error { hub.metrics.countError(error) }
            if let connection, connections[connection]?.send(logged.frame) == .closedSlow { hub.metrics.slowConsumers.increment() }
        case let .resend(connection, frame):
            _ = connections[connection]?.send(frame)
        case let .closeSocket(connection, code, reason):
            connections[connection]?.close(code: code, reason: reason)
        case .write(let write):
            return await perform(write)
        case .read(let read):
            return await perform(read)
        case let .replyJoin(ticket, result):
            guard let reply = joinReplies.removeValue(forKey: ticket) else { return nil }
            switch result {
            case .joined(let id):
                if let live { reply.resume(returning: .joined(id, live)) } else { reply.resume(returning: .retry) }
            case .rejected(let error): reply.resume(returning: .rejected(error))
            case .retry: reply.resume(returning: .retry)
            }
        case let .replySwitch(ticket, result):
            switchReplies.removeValue(forKey: ticket)?.resume(returning: result)
        case let .replySnapshot(ticket, snapshot):
            snapshotReplies.removeValue(forKey: ticket)?.resume(returning: snapshot)
        case .relay(let command):
            perform(command)
        case .sfu(let command):
            await perform(command)
        case .metric(let metric):
            record(metric)
        case let .log(level, message, metadata):
            logger.log(level: level, "\(message)", metadata: metadata)
        case .ended:
            hub.sessionClosed(session)
        }
        return nil
    }

    private func perform(_ write: StoreWrite) async -> SessionInput? {
        let store = hub.store
        switch write {
        case .presence(let record): try? await store.upsertPresence(session, record)
        case .removeParticipant(let id):
            pendingLog.removeAll { $0.participant == id }
            try? await store.removePresence(session, id)
            try? await store.dropMessages(session, id)
        case .health, .alert: journal.yield(write)
        case let .adjustScore(provider, delta): _ = try? await store.adjustScore(provider, delta: delta)
        case .endSession(let atMs): try? await store.endSession(session, atMs: atMs)
        case .releaseHome: try? await store.releaseHome(session, node: hub.config.node)
        case let .switchProvider(expected, to, reason, atMs):
            do {
                let moved = try await store.compareAndSetProvider(session, expectedEpoch: expected, new: to, reason: reason, atMs: atMs)
                if !moved, let record = try await store.session(session), let live = record.provider {
                    return .storeMoved(live, record.history.last?.reason ?? reason)
                }
            } catch {
                logger.error("store failed during a provider switch", metadata: ["error": "\(error)"])
            }
        }
        return nil
    }

    private func perform(_ read: StoreRead) async -> SessionInput {
        let store = hub.store
        switch read {
        case .scores(let ticket):
            do {
                return .answered(ticket, .scores(try await store.scores()))
            } catch {
                logger.error("store failed to read the scores", metadata: ["error": "\(error)"])
                return .answered(ticket, .failed)
            }
        case let .claim(ticket, proposed):
            do {
                return .answered(ticket, .claimed(try await store.claimProvider(session, proposed: proposed, atMs: hub.wallMs())))
            } catch {
                logger.error("store failed to claim the session", metadata: ["error": "\(error)"])
                return .answered(ticket, .failed)
            }
        case let .resumeLog(ticket, id, after):
            return .answered(ticket, .resumeLog(try? await store.messages(session, id, after: after)))
        }
    }

    private func perform(_ command: RelayCommand) {
        switch command {
        case .open(let epoch):
            relaySession = hub.relay?.open(session: session.rawValue, epoch: epoch) { [weak live] output in
                live?.post(.relay(output))
            }
        case .close(let now):
            guard let open = relaySession else { return }
            relaySession = nil
            if now {
                open.close()
            } else {
                Task {
                    try? await Task.sleep(for: SessionShell.relayGrace)
                    open.close()
                }
            }
        case let .signal(id, input):
            relaySession?.signal(from: id.rawValue, input)
        case .remove(let id):
            relaySession?.remove(id.rawValue)
        }
    }

    /// How long a relay epoch's legs outlive a switch away from them.
    static let relayGrace: Duration = .seconds(10)

    private func perform(_ command: SFUCommand) async {
        switch command {
        case let .prepare(attempt, room, missing, maxParticipants, expiresAt):
            guard let sfu = hub.sfu else { return }
            let work = Self.preparation(sfu, rooms: hub.sfuRooms, session: session.rawValue, room, missing, maxParticipants, expiresAt)
            sfuTasks[attempt] = Task { [weak live] in
                let result = await work()
                live?.post(.sfuPrepared(attempt: attempt, result))
                return result
            }
        case .end(let after):
            guard let rooms = hub.sfuRooms else { return }
            // The delete is registered at once, so that a session starting again under this id can call it off.
            var wait: (@Sendable () async -> Void)?
            if let attempt = after, let pending = sfuTasks.removeValue(forKey: attempt) { wait = { _ = await pending.value } }
            await rooms.delete(session.rawValue, after: wait)
        }
    }

    /// The work of one preparation, to run off the session's task: the room (unless it is known) and
    /// the missing tokens.
    private static func preparation(
        _ sfu: any SFUProvider, rooms: SFURooms?, session name: String, _ known: SFURoom?, _ missing: [ParticipantID], _ maxParticipants: Int,
        _ expiresAt: Int64
    ) -> @Sendable () async -> Result<SFUMade, SFUError> {
        {
            do throws(SFUError) {
                let room: SFURoom
                if let known {
                    room = known
                } else {
                    await rooms?.claim(name)
                    room = try await sfu.room(session: name, maxParticipants: maxParticipants, expiresAt: expiresAt)
                }
                return .success(SFUMade(room: room, tokens: try await tokens(sfu, room, missing, expiresAt)))
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

    private func record(_ metric: SessionMetric) {
        let metrics = hub.metrics
        switch metric {
        case .joined(let receivedAt):
            metrics.participants.increment()
            metrics.joinLatency.record(ContinuousClock.now - receivedAt)
        case .left: metrics.participants.decrement()
        case .switched(let reason): metrics.switches[reason]?.increment()
        case .healthReport: metrics.healthReports.increment()
        case let .sfuPrepared(ok, error):
            metrics.sfuPreparations[ok]?.increment()
            if let error { metrics.sfuErrors[error]?.increment() }
        }
    }
}
