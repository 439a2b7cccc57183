import Logging
import PostgresNIO
import TandemArbiter
import TandemProtocol
import TandemStore

/// The store that many nodes share: PostgreSQL, through postgres-nio's connection pool.
///
/// The provider authority's calls are each one statement, so that PostgreSQL's row locks make them
/// atomic across nodes: a claim is `INSERT … ON CONFLICT DO UPDATE … WHERE provider IS NULL`, a
/// compare-and-set an `UPDATE … WHERE epoch = expected` (a racing update re-checks the epoch once the
/// first commits), a score change an `UPDATE` of the score itself, never a read and then a write.
/// The resume logs stay in the memory of the node that serves the session.
public final class PostgresStore: SessionStore, ResumeLogInMemory {
    public let logs = MessageLogBook()
    public let location: PostgresLocation
    private let client: PostgresClient
    private let logger: Logger
    private let pool: Task<Void, Never>

    /// Starts the connection pool and applies the migrations the database lacks (safe when several
    /// nodes start at once). Fails when that has not happened within `timeout` (the pool itself keeps
    /// trying to connect for much longer).
    public static func open(_ location: PostgresLocation, logger: Logger, timeout: Duration = .seconds(10)) async throws -> PostgresStore {
        let store = try PostgresStore(location, logger: logger)
        do {
            let applied = try await withThrowingTaskGroup(of: [Int]?.self) { group in
                group.addTask { try await Migrations.apply(store.client, logger: logger) }
                group.addTask {
                    try await Task.sleep(for: timeout)
                    return nil
                }
                defer { group.cancelAll() }
                guard let applied = try await group.next() ?? nil else {
                    // Closing fails the migration's wait for a connection, which the group awaits.
                    store.close()
                    throw StoreError(.open, "cannot reach \(location) within \(timeout)")
                }
                return applied
            }
            if !applied.isEmpty { logger.notice("store \(location): applied migrations \(applied.map(String.init).joined(separator: ", "))") }
        } catch let error as StoreError {
            store.close()
            throw error
        } catch {
            store.close()
            throw StoreError(.open, "cannot prepare \(location): \(String(reflecting: error))")
        }
        return store
    }

    private init(_ location: PostgresLocation, logger: Logger) throws {
        self.location = location
        self.logger = logger
        // The pool says each failed connection attempt at info, again and again while the database is
        // away; the store's own errors say it once per call.
        var background = logger
        background.logLevel = max(logger.logLevel, .warning)
        client = PostgresClient(configuration: try location.clientConfiguration(), backgroundLogger: background)
        pool = Task { [client] in await client.run() }
    }

    /// Closes the pool's connections; calls after it fail.
    public func close() { pool.cancel() }

    deinit { pool.cancel() }

    /// Runs `body`, turning the driver's errors into ``StoreError``s that say what failed.
    /// Runs `body` within ``callTimeout``, turning the driver's errors into ``StoreError``s that say
    /// what failed. The pool waits for a connection as long as the database is away; a call does not.
    @discardableResult
    private func run<T: Sendable>(
        _ what: String, _ body: @escaping @Sendable (_ client: PostgresClient, _ logger: Logger) async throws -> T
    ) async throws -> T {
        let (client, logger) = (client, logger)
        let timeout = callTimeout
        do {
            return try await withThrowingTaskGroup(of: T?.self) { group in
                group.addTask { try await body(client, logger) }
                group.addTask {
                    try await Task.sleep(for: timeout)
                    return nil
                }
                defer { group.cancelAll() }
                guard let result = try await group.next() ?? nil else { throw StoreError(.query, "\(what): no answer within \(timeout)") }
                return result
            }
        } catch let error as PSQLError {
            throw StoreError(.query, "\(what): \(error.serverInfo?[.message] ?? String(describing: error.code))")
        }
    }

    /// The longest a call waits for the database.
    public let callTimeout: Duration = .seconds(5)

    // MARK: Provider authority

    public func claimProvider(_ session: SessionID, proposed: ProviderName, atMs: Int64) async throws -> ProviderState {
        let id = session.rawValue
        let kept = Int64(keptHistoryPerSession)
        return try await run("claim \(id)") { client, logger in
            // A row that another node inserts after this statement's snapshot is not visible to its
            // fallback SELECT; the next try sees it.
            for _ in 0..<5 {
                let rows = try await client.query(
                    """
                    WITH claimed AS (
                        INSERT INTO tandem_sessions AS s (session, provider, epoch, ended_at) VALUES (\(id), \(proposed.rawValue), 1, NULL)
                        ON CONFLICT (session) DO UPDATE SET provider = EXCLUDED.provider, epoch = s.epoch + 1, ended_at = NULL
                        WHERE s.provider IS NULL
                        RETURNING provider, epoch),
                    logged AS (
                        INSERT INTO tandem_history (session, epoch, provider, reason, at)
                        SELECT \(id), epoch, provider, 'join', \(atMs) FROM claimed
                        ON CONFLICT (session, epoch) DO UPDATE SET provider = EXCLUDED.provider, reason = EXCLUDED.reason, at = EXCLUDED.at),
                    trimmed AS (DELETE FROM tandem_history WHERE session = \(id) AND epoch <= (SELECT epoch FROM claimed) - \(kept))
                    SELECT provider, epoch FROM claimed
                    UNION ALL
                    SELECT provider, epoch FROM tandem_sessions WHERE session = \(id) AND provider IS NOT NULL AND NOT EXISTS (SELECT 1 FROM claimed)
                    """, logger: logger)
                for try await (provider, epoch) in rows.decode((String, Int).self) {
                    guard let name = ProviderName(rawValue: provider) else { throw StoreError(.corrupt, "session \(id) has provider \(provider)") }
                    return ProviderState(name: name, epoch: epoch)
                }
            }
            throw StoreError(.query, "claim \(id): the session changed under five tries")
        }
    }

    public func compareAndSetProvider(
        _ session: SessionID, expectedEpoch: Int, new: ProviderName, reason: SwitchReason, atMs: Int64
    ) async throws -> Bool {
        let id = session.rawValue
        let kept = Int64(keptHistoryPerSession)
        return try await run("compare-and-set \(id)") { client, logger in
            let rows = try await client.query(
                """
                WITH moved AS (
                    UPDATE tandem_sessions SET provider = \(new.rawValue), epoch = epoch + 1
                    WHERE session = \(id) AND epoch = \(expectedEpoch) AND provider IS NOT NULL
                    RETURNING epoch),
                logged AS (
                    INSERT INTO tandem_history (session, epoch, provider, reason, at)
                    SELECT \(id), epoch, \(new.rawValue), \(reason.rawValue), \(atMs) FROM moved
                    ON CONFLICT (session, epoch) DO UPDATE SET provider = EXCLUDED.provider, reason = EXCLUDED.reason, at = EXCLUDED.at),
                trimmed AS (DELETE FROM tandem_history WHERE session = \(id) AND epoch <= (SELECT epoch FROM moved) - \(kept))
                SELECT epoch FROM moved
                """, logger: logger)
            for try await _ in rows.decode(Int.self) { return true }
            return false
        }
    }

    public func lastEpoch(_ session: SessionID) async throws -> Int {
        try await run("last epoch of \(session)") { client, logger in
            let rows = try await client.query("SELECT epoch FROM tandem_sessions WHERE session = \(session.rawValue)", logger: logger)
            for try await epoch in rows.decode(Int.self) { return epoch }
            return 0
        }
    }

    public func session(_ session: SessionID) async throws -> SessionRecord? {
        let id = session.rawValue
        return try await run("session \(id)") { client, logger in
            var record: SessionRecord?
            let rows = try await client.query("SELECT provider, epoch, ended_at FROM tandem_sessions WHERE session = \(id)", logger: logger)
            for try await (provider, epoch, ended) in rows.decode((String?, Int, Int64?).self) {
                let state = provider.flatMap(ProviderName.init(rawValue:)).map { ProviderState(name: $0, epoch: epoch) }
                record = SessionRecord(session: session, provider: state, lastEpoch: epoch, history: [], endedAtMs: ended)
            }
            guard var found = record else { return nil }
            let history = try await client.query(
                "SELECT epoch, provider, reason, at FROM tandem_history WHERE session = \(id) ORDER BY epoch", logger: logger)
            for try await (epoch, provider, reason, at) in history.decode((Int, String, String, Int64).self) {
                guard let p = ProviderName(rawValue: provider), let r = SwitchReason(rawValue: reason) else { continue }
                found.history.append(HistoryEntry(epoch: epoch, provider: p, reason: r, atMs: at))
            }
            return found
        }
    }

    public func endSession(_ session: SessionID, atMs: Int64) async throws {
        let id = session.rawValue
        try await run("end \(id)") { client, logger in
            try await client.query(
                """
                WITH gone AS (DELETE FROM tandem_presence WHERE session = \(id))
                UPDATE tandem_sessions SET provider = NULL, ended_at = \(atMs) WHERE session = \(id)
                """, logger: logger)
        }
    }

    public func scores() async throws -> ProviderScores {
        try await run("scores") { client, logger in
            var values: [ProviderName: Int] = [:]
            for try await (provider, score) in try await client.query("SELECT provider, score FROM tandem_scores", logger: logger).decode(
                (String, Int).self)
            {
                if let name = ProviderName(rawValue: provider) { values[name] = score }
            }
            return ProviderScores(values)
        }
    }

    public func adjustScore(_ provider: ProviderName, delta: Int) async throws -> ProviderScores {
        let start = ProviderScores.defaults[provider] ?? 0
        try await run("adjust the score of \(provider)") { client, logger in
            try await client.query(
                """
                INSERT INTO tandem_scores AS s (provider, score) VALUES (\(provider.rawValue), LEAST(100, GREATEST(0, \(start + delta))))
                ON CONFLICT (provider) DO UPDATE SET score = LEAST(100, GREATEST(0, s.score + \(delta)))
                """, logger: logger)
        }
        return try await scores()
    }

    /// A shared store never ends sessions at start: other nodes may be serving them.
    public func endSessionsLeftOpen(atMs: Int64) async throws -> Int { 0 }

    // MARK: Homes

    public func heartbeat(_ node: NodeRecord, leaseMs: Int64) async throws {
        try await run("heartbeat of \(node.name)") { client, logger in
            try await client.query(
                """
                INSERT INTO tandem_nodes (name, address, state, lease_until)
                VALUES (\(node.name), \(node.address), \(node.state.rawValue), now() + \(leaseMs) * interval '1 millisecond')
                ON CONFLICT (name) DO UPDATE SET address = EXCLUDED.address, state = EXCLUDED.state, lease_until = EXCLUDED.lease_until
                """, logger: logger)
        }
    }

    public func liveNodes() async throws -> [NodeRecord] {
        try await run("nodes") { client, logger in
            let rows = try await client.query(
                "SELECT name, address, state FROM tandem_nodes WHERE lease_until > now() ORDER BY name", logger: logger)
            var nodes: [NodeRecord] = []
            for try await (name, address, state) in rows.decode((String, String?, String).self) {
                nodes.append(NodeRecord(name: name, address: address, state: NodeRecord.State(rawValue: state) ?? .serving))
            }
            return nodes
        }
    }

    public func removeNode(_ name: String) async throws {
        try await run("remove node \(name)") { client, logger in
            // Its sessions' homes stay, for the next nodes to take over at the next generation.
            try await client.query("DELETE FROM tandem_nodes WHERE name = \(name)", logger: logger)
        }
    }

    /// One statement: the home moves only from a node whose lease has run out or that drains (the row
    /// lock makes two askers take turns, and the second sees the first's home), and only to a serving
    /// node whose lease runs.
    public func acquireHome(_ session: SessionID, node: String) async throws -> SessionHome? {
        let id = session.rawValue
        return try await run("home of \(id)") { client, logger in
            // A home that another node inserted after this statement's snapshot is not visible to its
            // fallback SELECT; the next try sees it.
            for _ in 0..<5 {
                let rows = try await client.query(
                    """
                    WITH me AS (SELECT name FROM tandem_nodes WHERE name = \(node) AND lease_until > now() AND state = 'serving'),
                    taken AS (
                        INSERT INTO tandem_homes AS h (session, node, generation, since) SELECT \(id), name, 1, now() FROM me
                        ON CONFLICT (session) DO UPDATE SET node = EXCLUDED.node, generation = h.generation + 1, since = now()
                        WHERE h.node <> EXCLUDED.node
                        AND NOT EXISTS (SELECT 1 FROM tandem_nodes n WHERE n.name = h.node AND n.lease_until > now() AND n.state = 'serving')
                        RETURNING node, generation)
                    SELECT t.node, n.address, t.generation, true FROM taken t JOIN tandem_nodes n ON n.name = t.node
                    UNION ALL
                    SELECT h.node, n.address, h.generation, true FROM tandem_homes h JOIN tandem_nodes n ON n.name = h.node
                    WHERE h.session = \(id) AND NOT EXISTS (SELECT 1 FROM taken)
                    AND ((h.node = \(node) AND EXISTS (SELECT 1 FROM me)) OR (h.node <> \(node) AND n.lease_until > now() AND n.state = 'serving'))
                    UNION ALL
                    SELECT '', NULL, 0, EXISTS (SELECT 1 FROM me)
                    """, logger: logger)
                var meLive = false
                for try await (home, address, generation, found) in rows.decode((String, String?, Int, Bool).self) {
                    if !home.isEmpty { return SessionHome(node: home, address: address, generation: generation) }
                    meLive = found
                }
                guard meLive else { return nil }
            }
            throw StoreError(.query, "home of \(id): the home changed under five tries")
        }
    }

    public func releaseHome(_ session: SessionID, node: String) async throws {
        try await run("release \(session)") { client, logger in
            try await client.query("DELETE FROM tandem_homes WHERE session = \(session.rawValue) AND node = \(node)", logger: logger)
        }
    }

    public func home(_ session: SessionID) async throws -> SessionHome? {
        try await run("home of \(session)") { client, logger in
            let rows = try await client.query(
                """
                SELECT h.node, n.address, h.generation FROM tandem_homes h JOIN tandem_nodes n ON n.name = h.node
                WHERE h.session = \(session.rawValue) AND n.lease_until > now()
                """, logger: logger)
            for try await (node, address, generation) in rows.decode((String, String?, Int).self) {
                return SessionHome(node: node, address: address, generation: generation)
            }
            return nil
        }
    }

    // MARK: Journal

    public func upsertPresence(_ session: SessionID, _ r: PresenceRecord) async throws {
        try await run("presence in \(session)") { client, logger in
            try await client.query(
                """
                INSERT INTO tandem_presence (session, participant, name, state, node, last_seen)
                VALUES (\(session.rawValue), \(r.participant.rawValue), \(r.name), \(r.state.rawValue), \(r.node), \(r.lastSeenMs))
                ON CONFLICT (session, participant) DO UPDATE SET name = EXCLUDED.name, state = EXCLUDED.state,
                node = EXCLUDED.node, last_seen = EXCLUDED.last_seen
                """, logger: logger)
        }
    }

    public func removePresence(_ session: SessionID, _ participant: ParticipantID) async throws {
        try await run("presence in \(session)") { client, logger in
            try await client.query(
                "DELETE FROM tandem_presence WHERE session = \(session.rawValue) AND participant = \(participant.rawValue)", logger: logger)
        }
        logs.drop(session, participant)
    }

    public func presence(_ session: SessionID) async throws -> [PresenceRecord] {
        try await run("presence in \(session)") { client, logger in
            let rows = try await client.query(
                """
                SELECT participant, name, state, node, last_seen FROM tandem_presence WHERE session = \(session.rawValue)
                ORDER BY participant
                """, logger: logger)
            var records: [PresenceRecord] = []
            for try await (participant, name, state, node, seen) in rows.decode((String, String?, String, String, Int64).self) {
                guard let state = PeerConnectionState(rawValue: state) else { continue }
                records.append(PresenceRecord(participant: ParticipantID(participant), name: name, state: state, node: node, lastSeenMs: seen))
            }
            return records
        }
    }

    public func recordHealth(_ session: SessionID, _ sample: HealthSample) async throws {
        let r = sample.report
        try await run("health in \(session)") { client, logger in
            try await client.query(
                """
                INSERT INTO tandem_health (session, participant, at, epoch, provider, media, rtt, loss, jitter, bitrate, frame_height,
                candidate_type) VALUES (\(session.rawValue), \(sample.participant.rawValue), \(sample.atMs), \(r.epoch),
                \(r.provider.rawValue), \(r.media.rawValue), \(r.rttMs), \(r.lossPct), \(r.jitterMs), \(r.bitrateKbps),
                \(r.frameHeight), \(r.candidateType?.rawValue))
                """, logger: logger)
        }
    }

    public func latestHealth(_ session: SessionID) async throws -> [ParticipantID: HealthSample] {
        try await run("health in \(session)") { client, logger in
            let rows = try await client.query(
                """
                SELECT DISTINCT ON (participant) participant, at, epoch, provider, media, rtt, loss, jitter, bitrate, frame_height,
                candidate_type FROM tandem_health WHERE session = \(session.rawValue) ORDER BY participant, at DESC, id DESC
                """, logger: logger)
            var latest: [ParticipantID: HealthSample] = [:]
            for try await row in rows {
                let (p, at, epoch, provider, media, rtt, loss, jitter, bitrate, height, candidate) = try row.decode(
                    (String, Int64, Int, String, String, Double?, Double?, Double?, Double?, Int?, String?).self)
                guard let provider = ProviderName(rawValue: provider), let media = MediaState(rawValue: media) else { continue }
                let report = HealthReport(
                    epoch: epoch, provider: provider, media: media, rttMs: rtt, lossPct: loss, jitterMs: jitter, bitrateKbps: bitrate,
                    frameHeight: height, candidateType: candidate.flatMap(CandidateType.init(rawValue:)))
                latest[ParticipantID(p)] = HealthSample(participant: ParticipantID(p), report: report, atMs: at)
            }
            return latest
        }
    }

    public func recordAlert(_ session: SessionID, _ a: AlertRecord) async throws {
        let id = session.rawValue
        try await run("alert in \(id)") { client, logger in
            try await client.query(
                """
                WITH added AS (
                    INSERT INTO tandem_alerts (session, participant, kind, value, at)
                    VALUES (\(id), \(a.participant.rawValue), \(a.kind.rawValue), \(a.value), \(a.atMs)))
                DELETE FROM tandem_alerts WHERE id IN (
                    SELECT id FROM tandem_alerts WHERE session = \(id) ORDER BY at DESC, id DESC OFFSET \(keptAlertsPerSession - 1))
                """, logger: logger)
        }
    }

    public func alerts(_ session: SessionID) async throws -> [AlertRecord] {
        try await run("alerts in \(session)") { client, logger in
            let rows = try await client.query(
                "SELECT participant, kind, value, at FROM tandem_alerts WHERE session = \(session.rawValue) ORDER BY at, id", logger: logger)
            var alerts: [AlertRecord] = []
            for try await (participant, kind, value, at) in rows.decode((String, String, Double, Int64).self) {
                guard let kind = AlertKind(rawValue: kind) else { continue }
                alerts.append(AlertRecord(kind: kind, participant: ParticipantID(participant), value: value, atMs: at))
            }
            return alerts
        }
    }

    public func cleanup(nowMs: Int64, policy: RetentionPolicy) async throws -> CleanupReport {
        try await run("cleanup") { client, logger in
            try await client.withTransaction(logger: logger) { db in
                var report = CleanupReport()
                report.presence = try await Self.count(
                    db, "WITH gone AS (DELETE FROM tandem_presence WHERE last_seen < \(nowMs - policy.presenceStaleAfterMs) RETURNING 1)",
                    logger)
                report.healthSamples = try await Self.count(
                    db, "WITH gone AS (DELETE FROM tandem_health WHERE at < \(nowMs - policy.healthSamplesMs) RETURNING 1)", logger)
                let cutoff = nowMs - policy.finishedSessionsMs
                try await db.query(
                    """
                    WITH finished AS (SELECT session FROM tandem_sessions WHERE ended_at IS NOT NULL AND ended_at < \(cutoff)),
                    h AS (DELETE FROM tandem_history WHERE session IN (SELECT session FROM finished)),
                    a AS (DELETE FROM tandem_alerts WHERE session IN (SELECT session FROM finished))
                    DELETE FROM tandem_health WHERE session IN (SELECT session FROM finished)
                    """, logger: logger)
                report.sessions = try await Self.count(
                    db, "WITH gone AS (DELETE FROM tandem_sessions WHERE ended_at IS NOT NULL AND ended_at < \(cutoff) RETURNING 1)", logger)
                return report
            }
        }
    }

    /// Runs `deleting` (a `WITH gone AS (… RETURNING 1)`) and counts the rows it removed.
    private static func count(_ db: PostgresConnection, _ deleting: PostgresQuery, _ logger: Logger) async throws -> Int {
        var query = deleting
        query.sql += " SELECT count(*) FROM gone"
        for try await n in try await db.query(query, logger: logger).decode(Int.self) { return n }
        return 0
    }
}
