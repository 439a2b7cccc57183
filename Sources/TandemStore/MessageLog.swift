import NIOConcurrencyHelpers
import TandemProtocol

/// A bounded per-participant log of framed server messages, for resume. Bounded by count and bytes; when
/// older messages fall out, a resume from before them is refused rather than replayed with a gap.
public struct MessageLog: Sendable {
    public static let defaultMaxMessages = 512
    public static let defaultMaxBytes = 1 << 20

    struct Entry: Sendable {
        var seq: Int
        var frame: [UInt8]
    }

    private var entries: [Entry] = []
    private var head = 0
    private var bytes = 0
    /// The highest sequence number ever appended.
    public private(set) var lastSeq = 0
    let maxMessages: Int
    let maxBytes: Int

    public init(maxMessages: Int = defaultMaxMessages, maxBytes: Int = defaultMaxBytes) {
        self.maxMessages = maxMessages
        self.maxBytes = maxBytes
    }

    public mutating func append(seq: Int, _ frame: [UInt8]) {
        entries.append(Entry(seq: seq, frame: frame))
        bytes += frame.count
        lastSeq = max(lastSeq, seq)
        while entries.count - head > maxMessages || (bytes > maxBytes && entries.count - head > 1) {
            bytes -= entries[head].frame.count
            entries[head].frame = []
            head += 1
        }
        if head > 64 && head * 2 > entries.count {
            entries.removeFirst(head)
            head = 0
        }
    }

    /// The frames after `seq`, or nil if any of them has been dropped or `seq` is ahead of the log.
    public func after(_ seq: Int) -> [[UInt8]]? {
        guard seq <= lastSeq else { return nil }
        if seq == lastSeq { return [] }
        guard head < entries.count, entries[head].seq <= seq + 1 else { return nil }
        return entries[head...].lazy.filter { $0.seq > seq }.map(\.frame)
    }
}

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
public protocol ResumeLogInMemory: SessionStore {
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
