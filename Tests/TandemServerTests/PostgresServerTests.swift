import Foundation
import Logging
import TandemPostgres
import TandemPostgresTestSupport
import TandemProtocol
import TandemStore
import Testing

@testable import TandemServer

/// One node on PostgreSQL, end to end: joins, signals, reports and the admin API go through the
/// shared store as they go through SQLite.
@Suite struct PostgresServerTests {
    @Test func aSessionRunsOnPostgreSQL() async throws {
        let url = try await PostgresServer.shared().makeDatabase()
        var logger = Logger(label: "test.postgres")
        logger.logLevel = .warning
        let store = try await PostgresStore.open(try PostgresLocation.parse(url).get(), logger: logger)
        try await TestServer.with(store: store) { server in
            let (a, wa) = try await server.join("pg1", extra: #","name":"Ann""#)
            let (b, wb) = try await server.join("pg1")
            #expect(wa["provider"]?["epoch"] == .number(1))
            #expect(wb["provider"]?["name"] == wa["provider"]?["name"])
            _ = try await a.next("peer-joined")
            b.send(#"{"type":"health","epoch":1,"provider":"p2p","media":"connected","rttMs":500,"lossPct":9}"#)
            _ = try await b.next("alert")
            let (status, view) = try await server.http("GET", "/v1/sessions/pg1")
            #expect(status == 200)
            guard case .array(let participants)? = view?["participants"] else { Issue.record("no participants"); return }
            #expect(Set(participants.compactMap { $0["id"]?.stringValue }) == Set([wa, wb].compactMap { $0["participant"]?.stringValue }))
            let bView = participants.first { $0["id"] == wb["participant"] }
            #expect(bView?["health"]?["rttMs"] == .number(500))
            // An operator's switch is a compare-and-set in PostgreSQL, and both hear it.
            let (switched, _) = try await server.http("POST", "/v1/sessions/pg1/provider", body: #"{"name":"p2p"}"#)
            #expect(switched == 200)
            #expect(try await a.next("provider")["epoch"] == .number(2))
            #expect(try await b.next("provider")["epoch"] == .number(2))
            let record = try await store.session(SessionID("pg1")!)
            #expect(record?.history.map(\.reason) == [.join, .admin])
        }
    }
}
