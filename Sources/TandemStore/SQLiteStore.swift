import Dispatch
import Foundation
import NIOConcurrencyHelpers
import TandemArbiter
import TandemProtocol

/// The embedded store of a single node: one SQLite file in WAL mode, so that scores, session history,
/// presence, health samples and alerts survive a restart. Every call runs on one serial queue that owns
/// the connection: a slow disk then holds up store calls, never a thread of Swift's cooperative pool
/// (two on a two-core machine), which every room and socket shares.
public final class SQLiteStore: SessionStore, ResumeLogInMemory, HomesOfOneProcess, @unchecked Sendable {
    private let queue = DispatchQueue(label: "tandem.sqlite")
    private let db: SQLiteConnection
    public let logs = MessageLogBook()
    public let homes = HomesInMemory { Int64(Date().timeIntervalSince1970 * 1000) }
    private let pendingHealth = NIOLockedValueBox(PendingHealth())

    static let schema = """
        CREATE TABLE IF NOT EXISTS sessions (
            session TEXT PRIMARY KEY, provider TEXT, epoch INTEGER NOT NULL, ended_at INTEGER);
        CREATE TABLE IF NOT EXISTS history (
            session TEXT NOT NULL, epoch INTEGER NOT NULL, provider TEXT NOT NULL, reason TEXT NOT NULL,
            at INTEGER NOT NULL, PRIMARY KEY (session, epoch));
        CREATE TABLE IF NOT EXISTS scores (provider TEXT PRIMARY KEY, score INTEGER NOT NULL);
        CREATE TABLE IF NOT EXISTS presence (
            session TEXT NOT NULL, participant TEXT NOT NULL, name TEXT, state TEXT NOT NULL, node TEXT NOT NULL,
            last_seen INTEGER NOT NULL, PRIMARY KEY (session, participant));
        CREATE TABLE IF NOT EXISTS health (
            session TEXT NOT NULL, participant TEXT NOT NULL, at INTEGER NOT NULL, epoch INTEGER NOT NULL,
            provider TEXT NOT NULL, media TEXT NOT NULL, rtt REAL, loss REAL, jitter REAL, bitrate REAL,
            frame_height INTEGER, candidate_type TEXT);
        CREATE INDEX IF NOT EXISTS health_by_session ON health (session, participant, at);
        CREATE INDEX IF NOT EXISTS health_by_time ON health (at);
        CREATE TABLE IF NOT EXISTS alerts (
            session TEXT NOT NULL, participant TEXT NOT NULL, kind TEXT NOT NULL, value REAL NOT NULL,
            at INTEGER NOT NULL);
        CREATE INDEX IF NOT EXISTS alerts_by_session ON alerts (session, at);
        """

    /// Opens (creating if needed) the database at `path`.
    public init(path: String) throws {
        db = try SQLiteConnection(path: path)
        try db.execute("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;")
        try db.execute(Self.schema)
    }

    @discardableResult
    private func onQueue<T: Sendable>(_ body: @escaping @Sendable (SQLiteConnection) throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { done in
            queue.async { done.resume(with: Result { try body(self.db) }) }
        }
    }

    public func claimProvider(_ session: SessionID, proposed: ProviderName, atMs: Int64) async throws -> ProviderState {
        try await onQueue { db in
            try db.transaction {
                let rows = try db.query("SELECT provider, epoch FROM sessions WHERE session = ?", [.text(session.rawValue)])
                if let row = rows.first, let name = row[0].text.flatMap(ProviderName.init(rawValue:)), let epoch = row[1].int {
                    return ProviderState(name: name, epoch: Int(epoch))
                }
                let epoch = Int(rows.first?[1].int ?? 0) + 1
                try db.query(
                    """
                    INSERT INTO sessions (session, provider, epoch, ended_at) VALUES (?, ?, ?, NULL)
                    ON CONFLICT (session) DO UPDATE SET provider = excluded.provider, epoch = excluded.epoch, ended_at = NULL
                    """, [.text(session.rawValue), .text(proposed.rawValue), .int(Int64(epoch))])
                try Self.insertHistory(db, session, epoch: epoch, provider: proposed, reason: .join, atMs: atMs)
                return ProviderState(name: proposed, epoch: epoch)
            }
        }
    }

    private static func insertHistory(
        _ db: SQLiteConnection, _ session: SessionID, epoch: Int, provider: ProviderName, reason: SwitchReason, atMs: Int64
    ) throws {
        try db.query(
            "INSERT OR REPLACE INTO history (session, epoch, provider, reason, at) VALUES (?, ?, ?, ?, ?)",
            [.text(session.rawValue), .int(Int64(epoch)), .text(provider.rawValue), .text(reason.rawValue), .int(atMs)])
        try db.query(
            "DELETE FROM history WHERE session = ? AND epoch <= ?", [.text(session.rawValue), .int(Int64(epoch - keptHistoryPerSession))])
    }

    public func compareAndSetProvider(
        _ session: SessionID, expectedEpoch: Int, new: ProviderName, reason: SwitchReason, atMs: Int64
    ) async throws -> Bool {
        try await onQueue { db in
            try db.transaction {
                try db.query(
                    "UPDATE sessions SET provider = ?, epoch = epoch + 1 WHERE session = ? AND epoch = ? AND provider IS NOT NULL",
                    [.text(new.rawValue), .text(session.rawValue), .int(Int64(expectedEpoch))])
                guard db.changes == 1 else { return false }
                try Self.insertHistory(db, session, epoch: expectedEpoch + 1, provider: new, reason: reason, atMs: atMs)
                return true
            }
        }
    }

    public func lastEpoch(_ session: SessionID) async throws -> Int {
        try await onQueue { db in
            Int(try db.query("SELECT epoch FROM sessions WHERE session = ?", [.text(session.rawValue)]).first?[0].int ?? 0)
        }
    }

    public func session(_ session: SessionID) async throws -> SessionRecord? {
        try await onQueue { db in
            guard let row = try db.query("SELECT provider, epoch, ended_at FROM sessions WHERE session = ?", [.text(session.rawValue)]).first,
                let epoch = row[1].int
            else { return nil }
            let history = try db.query(
                "SELECT epoch, provider, reason, at FROM history WHERE session = ? ORDER BY epoch", [.text(session.rawValue)]
            ).compactMap { r -> HistoryEntry? in
                guard let e = r[0].int, let p = r[1].text.flatMap(ProviderName.init(rawValue:)),
                    let reason = r[2].text.flatMap(SwitchReason.init(rawValue:)), let at = r[3].int
                else { return nil }
                return HistoryEntry(epoch: Int(e), provider: p, reason: reason, atMs: at)
            }
            let provider = row[0].text.flatMap(ProviderName.init(rawValue:)).map { ProviderState(name: $0, epoch: Int(epoch)) }
            return SessionRecord(session: session, provider: provider, lastEpoch: Int(epoch), history: history, endedAtMs: row[2].int)
        }
    }

    public func endSession(_ session: SessionID, atMs: Int64) async throws {
        try await onQueue { db in
            try db.transaction {
                try db.query("UPDATE sessions SET provider = NULL, ended_at = ? WHERE session = ?", [.int(atMs), .text(session.rawValue)])
                try db.query("DELETE FROM presence WHERE session = ?", [.text(session.rawValue)])
            }
        }
    }

    public func scores() async throws -> ProviderScores {
        try await onQueue { db in try Self.readScores(db) }
    }

    private static func readScores(_ db: SQLiteConnection) throws -> ProviderScores {
        var values: [ProviderName: Int] = [:]
        for row in try db.query("SELECT provider, score FROM scores") {
            if let name = row[0].text.flatMap(ProviderName.init(rawValue:)), let score = row[1].int { values[name] = Int(score) }
        }
        return ProviderScores(values)
    }

    public func adjustScore(_ provider: ProviderName, delta: Int) async throws -> ProviderScores {
        try await onQueue { db in
            try db.transaction {
                var scores = try Self.readScores(db)
                scores.apply(delta, to: provider)
                try db.query(
                    "INSERT INTO scores (provider, score) VALUES (?, ?) ON CONFLICT (provider) DO UPDATE SET score = excluded.score",
                    [.text(provider.rawValue), .int(Int64(scores[provider]))])
                return scores
            }
        }
    }

    public func upsertPresence(_ session: SessionID, _ r: PresenceRecord) async throws {
        try await onQueue { db in
            try db.query(
                """
                INSERT INTO presence (session, participant, name, state, node, last_seen) VALUES (?, ?, ?, ?, ?, ?)
                ON CONFLICT (session, participant) DO UPDATE SET name = excluded.name, state = excluded.state,
                node = excluded.node, last_seen = excluded.last_seen
                """,
                [
                    .text(session.rawValue), .text(r.participant.rawValue), r.name.map(SQLValue.text) ?? .null, .text(r.state.rawValue),
                    .text(r.node), .int(r.lastSeenMs),
                ])
        }
    }

    public func removePresence(_ session: SessionID, _ participant: ParticipantID) async throws {
        try await onQueue { db in
            try db.query("DELETE FROM presence WHERE session = ? AND participant = ?", [.text(session.rawValue), .text(participant.rawValue)])
        }
        logs.drop(session, participant)
    }

    public func presence(_ session: SessionID) async throws -> [PresenceRecord] {
        try await onQueue { db in
            try db.query(
                "SELECT participant, name, state, node, last_seen FROM presence WHERE session = ? ORDER BY participant",
                [.text(session.rawValue)]
            ).compactMap { r in
                guard let p = r[0].text, let state = r[2].text.flatMap(PeerConnectionState.init(rawValue:)), let node = r[3].text,
                    let seen = r[4].int
                else { return nil }
                return PresenceRecord(participant: ParticipantID(p), name: r[1].text, state: state, node: node, lastSeenMs: seen)
            }
        }
    }

    /// Queued for the next write (the caller does not wait for the disk): one transaction then writes all
    /// that waits, instead of a transaction per sample, which a session would wait for. Past
    /// `maxPendingHealth` waiting samples (a disk that stalls) new ones are dropped and counted.
    public func recordHealth(_ session: SessionID, _ sample: HealthSample) async throws {
        let schedule = pendingHealth.withLockedValue { pending -> Bool in
            guard pending.rows.count < Self.maxPendingHealth else {
                pending.dropped += 1
                return false
            }
            pending.rows.append((session, sample))
            defer { pending.flushScheduled = true }
            return !pending.flushScheduled
        }
        if schedule { queue.async { try? self.flushHealth(self.db) } }
    }

    /// Samples dropped because too many were waiting for the disk.
    public var droppedHealthSamples: Int { pendingHealth.withLockedValue { $0.dropped } }

    static let maxPendingHealth = 8192

    struct PendingHealth {
        var rows: [(SessionID, HealthSample)] = []
        var flushScheduled = false
        var dropped = 0
    }

    /// On the queue: writes the samples waiting, in one transaction. Reads of health call it first.
    private func flushHealth(_ db: SQLiteConnection) throws {
        let rows = pendingHealth.withLockedValue { pending in
            defer {
                pending.rows = []
                pending.flushScheduled = false
            }
            return pending.rows
        }
        guard !rows.isEmpty else { return }
        func opt(_ d: Double?) -> SQLValue { d.map(SQLValue.double) ?? .null }
        try db.transaction {
            for (session, sample) in rows {
                let r = sample.report
                try db.query(
                    """
                    INSERT INTO health (session, participant, at, epoch, provider, media, rtt, loss, jitter, bitrate, frame_height,
                    candidate_type) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                    """,
                    [
                        .text(session.rawValue), .text(sample.participant.rawValue), .int(sample.atMs), .int(Int64(r.epoch)),
                        .text(r.provider.rawValue), .text(r.media.rawValue), opt(r.rttMs), opt(r.lossPct), opt(r.jitterMs),
                        opt(r.bitrateKbps), r.frameHeight.map { .int(Int64($0)) } ?? .null,
                        r.candidateType.map { .text($0.rawValue) } ?? .null,
                    ])
            }
        }
    }

    public func latestHealth(_ session: SessionID) async throws -> [ParticipantID: HealthSample] {
        try await onQueue { db in
            try self.flushHealth(db)
            let rows = try db.query(
                """
                SELECT participant, at, epoch, provider, media, rtt, loss, jitter, bitrate, frame_height, candidate_type
                FROM health h WHERE session = ?1 AND at = (SELECT MAX(at) FROM health WHERE session = ?1 AND participant = h.participant)
                """, [.text(session.rawValue)])
            var latest: [ParticipantID: HealthSample] = [:]
            for r in rows {
                guard let p = r[0].text, let at = r[1].int, let epoch = r[2].int,
                    let provider = r[3].text.flatMap(ProviderName.init(rawValue:)),
                    let media = r[4].text.flatMap(MediaState.init(rawValue:))
                else { continue }
                let report = HealthReport(
                    epoch: Int(epoch), provider: provider, media: media, rttMs: r[5].double, lossPct: r[6].double,
                    jitterMs: r[7].double, bitrateKbps: r[8].double, frameHeight: r[9].int.map { Int($0) },
                    candidateType: r[10].text.flatMap(CandidateType.init(rawValue:)))
                latest[ParticipantID(p)] = HealthSample(participant: ParticipantID(p), report: report, atMs: at)
            }
            return latest
        }
    }

    public func recordAlert(_ session: SessionID, _ a: AlertRecord) async throws {
        try await onQueue { db in
            try db.query(
                "INSERT INTO alerts (session, participant, kind, value, at) VALUES (?, ?, ?, ?, ?)",
                [.text(session.rawValue), .text(a.participant.rawValue), .text(a.kind.rawValue), .double(a.value), .int(a.atMs)])
            try db.query(
                """
                DELETE FROM alerts WHERE rowid IN
                (SELECT rowid FROM alerts WHERE session = ? ORDER BY at DESC, rowid DESC LIMIT -1 OFFSET ?)
                """, [.text(session.rawValue), .int(Int64(keptAlertsPerSession))])
        }
    }

    public func alerts(_ session: SessionID) async throws -> [AlertRecord] {
        try await onQueue { db in
            try db.query("SELECT participant, kind, value, at FROM alerts WHERE session = ? ORDER BY at, rowid", [.text(session.rawValue)])
                .compactMap { r in
                    guard let p = r[0].text, let kind = r[1].text.flatMap(AlertKind.init(rawValue:)), let v = r[2].double, let at = r[3].int
                    else { return nil }
                    return AlertRecord(kind: kind, participant: ParticipantID(p), value: v, atMs: at)
                }
        }
    }

    public func endSessionsLeftOpen(atMs: Int64) async throws -> Int {
        try await onQueue { db in
            try db.transaction {
                try db.query("UPDATE sessions SET provider = NULL, ended_at = ? WHERE provider IS NOT NULL", [.int(atMs)])
                let ended = db.changes
                try db.query("DELETE FROM presence")
                return ended
            }
        }
    }

    public func cleanup(nowMs: Int64, policy: RetentionPolicy) async throws -> CleanupReport {
        try await onQueue { db in
            try self.flushHealth(db)
            return try db.transaction {
                var report = CleanupReport()
                try db.query("DELETE FROM presence WHERE last_seen < ?", [.int(nowMs - policy.presenceStaleAfterMs)])
                report.presence = db.changes
                try db.query("DELETE FROM health WHERE at < ?", [.int(nowMs - policy.healthSamplesMs)])
                report.healthSamples = db.changes
                let cutoff = SQLValue.int(nowMs - policy.finishedSessionsMs)
                let finished = "SELECT session FROM sessions WHERE ended_at IS NOT NULL AND ended_at < ?"
                try db.query("DELETE FROM history WHERE session IN (\(finished))", [cutoff])
                try db.query("DELETE FROM alerts WHERE session IN (\(finished))", [cutoff])
                try db.query("DELETE FROM health WHERE session IN (\(finished))", [cutoff])
                try db.query("DELETE FROM sessions WHERE ended_at IS NOT NULL AND ended_at < ?", [cutoff])
                report.sessions = db.changes
                return report
            }
        }
    }
}
