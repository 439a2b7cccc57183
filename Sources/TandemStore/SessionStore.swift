import TandemArbiter
import TandemProtocol

/// One step of a session's provider history.
public struct HistoryEntry: Sendable, Equatable {
    public var epoch: Int
    public var provider: ProviderName
    public var reason: SwitchReason
    /// Milliseconds since 1970.
    public var atMs: Int64

    public init(epoch: Int, provider: ProviderName, reason: SwitchReason, atMs: Int64) {
        self.epoch = epoch
        self.provider = provider
        self.reason = reason
        self.atMs = atMs
    }
}

/// A session's provider as the store holds it.
public struct ProviderState: Sendable, Equatable {
    public var name: ProviderName
    public var epoch: Int

    public init(name: ProviderName, epoch: Int) {
        self.name = name
        self.epoch = epoch
    }
}

public struct SessionRecord: Sendable, Equatable {
    public var session: SessionID
    /// Nil once the session has ended.
    public var provider: ProviderState?
    /// The last epoch the session id used, also after it ended.
    public var lastEpoch: Int
    public var history: [HistoryEntry]
    public var endedAtMs: Int64?

    public init(session: SessionID, provider: ProviderState?, lastEpoch: Int, history: [HistoryEntry], endedAtMs: Int64? = nil) {
        self.session = session
        self.provider = provider
        self.lastEpoch = lastEpoch
        self.history = history
        self.endedAtMs = endedAtMs
    }
}

public struct PresenceRecord: Sendable, Equatable {
    public var participant: ParticipantID
    public var name: String?
    public var state: PeerConnectionState
    public var node: String
    public var lastSeenMs: Int64

    public init(participant: ParticipantID, name: String?, state: PeerConnectionState, node: String, lastSeenMs: Int64) {
        self.participant = participant
        self.name = name
        self.state = state
        self.node = node
        self.lastSeenMs = lastSeenMs
    }
}

public struct HealthSample: Sendable, Equatable {
    public var participant: ParticipantID
    public var report: HealthReport
    public var atMs: Int64

    public init(participant: ParticipantID, report: HealthReport, atMs: Int64) {
        self.participant = participant
        self.report = report
        self.atMs = atMs
    }
}

public struct AlertRecord: Sendable, Equatable {
    public var kind: AlertKind
    public var participant: ParticipantID
    public var value: Double
    public var atMs: Int64

    public init(kind: AlertKind, participant: ParticipantID, value: Double, atMs: Int64) {
        self.kind = kind
        self.participant = participant
        self.value = value
        self.atMs = atMs
    }
}

/// One framed server message as sent to one participant.
public struct LoggedMessage: Sendable, Equatable {
    public var participant: ParticipantID
    public var seq: Int
    public var frame: [UInt8]

    public init(participant: ParticipantID, seq: Int, frame: [UInt8]) {
        self.participant = participant
        self.seq = seq
        self.frame = frame
    }
}

/// How long the cleanup job keeps things.
public struct RetentionPolicy: Sendable {
    public var presenceStaleAfterMs: Int64 = 60_000
    public var healthSamplesMs: Int64 = 24 * 3600 * 1000
    public var finishedSessionsMs: Int64 = 24 * 3600 * 1000

    public init() {}
}

/// What cleanup removed.
public struct CleanupReport: Sendable, Equatable {
    public var presence = 0
    public var healthSamples = 0
    public var sessions = 0
    public init() {}
}

/// Error from a store backend, with a code.
public struct StoreError: Error, Sendable, CustomStringConvertible {
    public enum Code: String, Sendable { case open, query, corrupt }
    public let code: Code
    public let message: String
    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }
    public var description: String { "store \(code.rawValue): \(message)" }
}

/// The session store, by concern: what a backend guarantees differs between them.
public typealias SessionStore = ProviderAuthority & SessionJournal & ResumeLog & SessionHomes

/// The authority on which provider and epoch each session is on, and the providers' learning scores.
/// Every node serving sessions of one store decides through it, so each call is atomic for all of
/// them: of racing claims exactly one selects, of racing compare-and-sets exactly one moves, and
/// concurrent score adjustments all count.
public protocol ProviderAuthority: Sendable {
    /// Get-or-select: if the session is live, its provider; otherwise `proposed` at the next epoch, which
    /// becomes the session's provider. Atomic: of two racing callers exactly one selects.
    func claimProvider(_ session: SessionID, proposed: ProviderName, atMs: Int64) async throws -> ProviderState
    /// Moves a live session from `expectedEpoch` to `new` at `expectedEpoch + 1`. False (and no change)
    /// when the session is no longer at `expectedEpoch`.
    func compareAndSetProvider(
        _ session: SessionID, expectedEpoch: Int, new: ProviderName, reason: SwitchReason, atMs: Int64
    ) async throws -> Bool
    /// The last epoch a session id used, 0 if never.
    func lastEpoch(_ session: SessionID) async throws -> Int
    func session(_ session: SessionID) async throws -> SessionRecord?
    /// The session has no participants any more (its presence goes with it).
    func endSession(_ session: SessionID, atMs: Int64) async throws

    func scores() async throws -> ProviderScores
    /// Applies a delta (clamped) and returns the new scores.
    func adjustScore(_ provider: ProviderName, delta: Int) async throws -> ProviderScores

    /// Ends every session the store still has open, which a crash left so: called at start by a node
    /// that is the store's only user (a shared store answers 0 and ends none). The number ended.
    func endSessionsLeftOpen(atMs: Int64) async throws -> Int
}

/// What happened in sessions, for the admin API and operators: presence, health samples and alerts.
/// Nothing decides on it, so a backend may write it behind the caller (SQLite batches health samples)
/// and keeps only so much of it (``keptAlertsPerSession``, ``RetentionPolicy``).
public protocol SessionJournal: Sendable {
    func upsertPresence(_ session: SessionID, _ record: PresenceRecord) async throws
    func removePresence(_ session: SessionID, _ participant: ParticipantID) async throws
    func presence(_ session: SessionID) async throws -> [PresenceRecord]

    func recordHealth(_ session: SessionID, _ sample: HealthSample) async throws
    func latestHealth(_ session: SessionID) async throws -> [ParticipantID: HealthSample]

    func recordAlert(_ session: SessionID, _ alert: AlertRecord) async throws
    func alerts(_ session: SessionID) async throws -> [AlertRecord]

    /// Removes stale presence, old health samples and long-finished sessions.
    func cleanup(nowMs: Int64, policy: RetentionPolicy) async throws -> CleanupReport
}

/// The messages sent to each participant, for a resume: bounded per participant (``MessageLog``), and
/// kept by the node that serves the session, since it is written on every message sent.
public protocol ResumeLog: Sendable {
    /// Appends framed server messages to their participants' logs, in order.
    func appendMessages(_ session: SessionID, _ messages: [LoggedMessage]) async throws
    /// The messages after `seq`, or nil when some of them are no longer kept (resume impossible).
    func messages(_ session: SessionID, _ participant: ParticipantID, after seq: Int) async throws -> [[UInt8]]?
    func dropMessages(_ session: SessionID, _ participant: ParticipantID) async throws
}

/// Most alerts a store keeps per session (the newest); a flapping link cannot grow it without end.
public let keptAlertsPerSession = 256

/// Most provider changes a store keeps per session (the newest): a session that lives for weeks and
/// moves often keeps a record of the same size as a short one.
public let keptHistoryPerSession = 256
