import Logging
import TandemArbiter
import TandemMedia
import TandemMediaCore
import TandemProtocol
import TandemSFU
import TandemStore

/// Names what the I/O shell holds for the machine: a join's, a switch's or a snapshot's reply.
struct Ticket: Hashable, Sendable {
    let raw: UInt64
}

/// A join as the machine takes it: what the socket layer checked, with the participant id and resume
/// key a fresh join gets (made by the shell, so that the machine draws no random numbers).
struct JoinArrival: Sendable {
    let ticket: Ticket
    let request: JoinRequest
    /// The verified token identity, when the join carried a token.
    let identity: String?
    let connection: UInt64
    let receivedAt: ContinuousClock.Instant
    let participant: ParticipantID
    let resumeKey: String
}

/// What the SFU service made for a session: its room, and tokens for some of its participants.
struct SFUMade: Sendable {
    var room: SFURoom
    var tokens: [ParticipantID: String]
}

/// Everything that happens to a live session, in the order its task takes it.
enum SessionInput: Sendable {
    case join(JoinArrival)
    case message(ParticipantID, connection: UInt64, ClientMessage)
    case socketClosed(ParticipantID, connection: UInt64)
    /// The socket layer refused a message of a joined participant.
    case reject(ParticipantID, connection: UInt64, ProtocolError)
    /// Close a participant's socket once what was queued before is sent.
    case close(ParticipantID, connection: UInt64, code: UInt16, reason: String)
    case tick
    case forceSwitch(Ticket, ProviderName)
    case snapshot(Ticket)
    case drain
    /// The node lost its lease: another node may serve the session now. Everybody is told to resume
    /// (4000), which brings them to it; the session is not ended in the store.
    case fence
    /// Whether the node holds its lease in the store (``SessionMachine/holdsLease``).
    case lease(held: Bool)
    /// What the media relay's leg for a participant said (answers, candidates, media state).
    case relay(RelayOutput)
    /// A background preparation of the session's SFU room and tokens ended.
    case sfuPrepared(attempt: Int, Result<SFUMade, SFUError>)
    /// The answer to a ``SessionEffect/read(_:)``, which the shell gives before any other input.
    case answered(Ticket, StoreAnswer)
    /// A switch this session stored found the store on another provider and epoch: follow the store.
    case storeMoved(ProviderState, SwitchReason)
}

/// A read a join waits for.
enum StoreRead: Sendable, Equatable {
    case scores(Ticket)
    case claim(Ticket, proposed: ProviderName)
    /// The messages a resuming participant missed.
    case resumeLog(Ticket, ParticipantID, after: Int)
}

enum StoreAnswer: Sendable, Equatable {
    case scores(ProviderScores)
    case claimed(ProviderState)
    case resumeLog([[UInt8]]?)
    case failed
}

/// A write the shell makes in order, before the next effect.
enum StoreWrite: Sendable, Equatable {
    case presence(PresenceRecord)
    /// The participant's presence and resume log go.
    case removeParticipant(ParticipantID)
    case health(HealthSample)
    case alert(AlertRecord)
    case adjustScore(ProviderName, delta: Int)
    case endSession(atMs: Int64)
    /// This node no longer serves the session: written before the hub forgets it, so that a new session
    /// under the same id on this node takes the home after the release, never before it.
    case releaseHome
    /// A compare-and-set from `expectedEpoch`; when the store has moved on, the shell answers with
    /// ``SessionInput/storeMoved(_:_:)``.
    case switchProvider(expectedEpoch: Int, to: ProviderName, reason: SwitchReason, atMs: Int64)
}

enum JoinResult: Sendable, Equatable {
    case joined(ParticipantID)
    case rejected(ProtocolError)
    /// The live session closed meanwhile: ask the hub again.
    case retry
}

enum RelayCommand: Sendable, Equatable {
    case open(epoch: Int)
    /// After the relay's grace (make before break) unless the session has ended.
    case close(now: Bool)
    case signal(ParticipantID, RelayInput)
    case remove(ParticipantID)
}

enum SFUCommand: Sendable {
    /// Make the room (unless `room` exists) and tokens for `missing`, off the session's task.
    case prepare(attempt: Int, room: SFURoom?, missing: [ParticipantID], maxParticipants: Int, expiresAt: Int64)
    /// The session ended: its room goes, after the preparation `after` if one is under way.
    case end(after: Int?)
}

enum SessionMetric: Sendable, Equatable {
    case joined(receivedAt: ContinuousClock.Instant)
    case left
    case switched(SwitchReason)
    case healthReport
    case sfuPrepared(ok: Bool, error: SFUError.Code?)
}

/// What the machine asks its shell to do, in order.
enum SessionEffect: Sendable {
    /// A framed message for a participant: written to its socket (if it has one) and to the resume log.
    case send(connection: UInt64?, LoggedMessage, type: String, error: ErrorCode?)
    /// A frame from the resume log, written again as it was.
    case resend(connection: UInt64, [UInt8])
    case closeSocket(connection: UInt64, code: UInt16, reason: String)
    case write(StoreWrite)
    /// Answered with ``SessionInput/answered(_:_:)``; always the last effect of its input.
    case read(StoreRead)
    case replyJoin(Ticket, JoinResult)
    case replySwitch(Ticket, Result<ProviderState, ProtocolError>)
    case replySnapshot(Ticket, SessionSnapshot?)
    case relay(RelayCommand)
    case sfu(SFUCommand)
    case metric(SessionMetric)
    case log(Logger.Level, String, Logger.Metadata)
    /// The session has ended: the hub forgets it.
    case ended
}
