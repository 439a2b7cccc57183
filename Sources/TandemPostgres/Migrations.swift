import Logging
import PostgresNIO

/// The store's schema, as numbered steps. A step once released is never edited: a change is a new step.
/// Tables are prefixed `tandem_`, so that the store can share a database with other schemas.
enum Migrations {
    static let steps: [(version: Int, sql: [String])] = [
        (
            1,
            [
                """
                CREATE TABLE tandem_sessions (
                    session TEXT PRIMARY KEY, provider TEXT, epoch BIGINT NOT NULL, ended_at BIGINT)
                """,
                """
                CREATE TABLE tandem_history (
                    session TEXT NOT NULL, epoch BIGINT NOT NULL, provider TEXT NOT NULL, reason TEXT NOT NULL,
                    at BIGINT NOT NULL, PRIMARY KEY (session, epoch))
                """,
                "CREATE TABLE tandem_scores (provider TEXT PRIMARY KEY, score INTEGER NOT NULL)",
                """
                CREATE TABLE tandem_presence (
                    session TEXT NOT NULL, participant TEXT NOT NULL, name TEXT, state TEXT NOT NULL, node TEXT NOT NULL,
                    last_seen BIGINT NOT NULL, PRIMARY KEY (session, participant))
                """,
                """
                CREATE TABLE tandem_health (
                    id BIGSERIAL PRIMARY KEY, session TEXT NOT NULL, participant TEXT NOT NULL, at BIGINT NOT NULL,
                    epoch BIGINT NOT NULL, provider TEXT NOT NULL, media TEXT NOT NULL, rtt DOUBLE PRECISION,
                    loss DOUBLE PRECISION, jitter DOUBLE PRECISION, bitrate DOUBLE PRECISION, frame_height INTEGER,
                    candidate_type TEXT)
                """,
                "CREATE INDEX tandem_health_by_session ON tandem_health (session, participant, at)",
                "CREATE INDEX tandem_health_by_time ON tandem_health (at)",
                """
                CREATE TABLE tandem_alerts (
                    id BIGSERIAL PRIMARY KEY, session TEXT NOT NULL, participant TEXT NOT NULL, kind TEXT NOT NULL,
                    value DOUBLE PRECISION NOT NULL, at BIGINT NOT NULL)
                """,
                "CREATE INDEX tandem_alerts_by_session ON tandem_alerts (session, at)",
            ]
        ),
        (
            2,
            [
                """
                CREATE TABLE tandem_nodes (
                    name TEXT PRIMARY KEY, address TEXT, state TEXT NOT NULL, lease_until TIMESTAMPTZ NOT NULL)
                """,
                """
                CREATE TABLE tandem_homes (
                    session TEXT PRIMARY KEY, node TEXT NOT NULL, generation BIGINT NOT NULL, since TIMESTAMPTZ NOT NULL)
                """,
                "CREATE INDEX tandem_homes_by_node ON tandem_homes (node)",
            ]
        ),
    ]

    /// Any number, the same on every node: the advisory lock that makes nodes starting at once apply
    /// the steps one after the other (the second finds them applied).
    static let lockKey: Int64 = 0x7461_6e64_656d  // "tandem"

    /// Applies the steps this database lacks, in one transaction. The versions applied.
    static func apply(_ client: PostgresClient, logger: Logger) async throws -> [Int] {
        try await client.withTransaction(logger: logger) { connection in
            try await connection.query("SELECT pg_advisory_xact_lock(\(lockKey))", logger: logger)
            try await connection.query(
                "CREATE TABLE IF NOT EXISTS tandem_migrations (version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
                logger: logger)
            var done: Set<Int> = []
            for try await version in try await connection.query("SELECT version FROM tandem_migrations", logger: logger).decode(Int.self) {
                done.insert(version)
            }
            var applied: [Int] = []
            for step in steps where !done.contains(step.version) {
                for statement in step.sql { try await connection.query(PostgresQuery(unsafeSQL: statement), logger: logger) }
                try await connection.query("INSERT INTO tandem_migrations (version) VALUES (\(step.version))", logger: logger)
                applied.append(step.version)
            }
            return applied
        }
    }
}
