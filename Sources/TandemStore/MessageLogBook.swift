import NIOConcurrencyHelpers
import TandemProtocol

/// Per-participant resume logs, kept in memory by the embedded stores: a resume goes to the node that
/// holds the socket's session, and writing every outgoing message to disk would put a write on the
/// per-message path.
public final class MessageLogBook: Sendable {
    private let logs = NIOLockedValueBox<[SessionID: [ParticipantID: MessageLog]]>([:])
    private let maxMessages: Int

    public init(maxMessages: Int = MessageLog.defaultMaxMessages) { self.maxMessages = maxMessages }

    public func append(_ session: SessionID, _ messages: [LoggedMessage]) {
        logs.withLockedValue { logs in
            for m in messages {
                logs[session, default: [:]][m.participant, default: MessageLog(maxMessages: maxMessages)].append(seq: m.seq, m.frame)
            }
        }
    }

    public func after(_ session: SessionID, _ participant: ParticipantID, seq: Int) -> [[UInt8]]? {
        logs.withLockedValue { $0[session]?[participant]?.after(seq) }
    }

    public func drop(_ session: SessionID, _ participant: ParticipantID) {
        logs.withLockedValue { logs in
            logs[session]?[participant] = nil
            if logs[session]?.isEmpty == true { logs[session] = nil }
        }
    }
}

/// A store whose resume logs are this node's memory (`logs`): the embedded stores.
public protocol ResumeLogInMemory: ResumeLog {
    var logs: MessageLogBook { get }
}

extension ResumeLogInMemory {
    public func appendMessages(_ session: SessionID, _ messages: [LoggedMessage]) async throws {
        logs.append(session, messages)
    }

    public func messages(_ session: SessionID, _ participant: ParticipantID, after seq: Int) async throws -> [[UInt8]]? {
        logs.after(session, participant, seq: seq)
    }

    public func dropMessages(_ session: SessionID, _ participant: ParticipantID) async throws {
        logs.drop(session, participant)
    }
}
