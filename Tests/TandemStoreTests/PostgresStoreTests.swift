import Foundation
import Logging
import TandemArbiter
import TandemPostgres
import TandemPostgresTestSupport
import TandemProtocol
import Testing

@testable import TandemStore

/// What only the shared store must do: hold across many connections and nodes.
@Suite struct PostgresStoreTests {
    static var quiet: Logger {
        var logger = Logger(label: "tandem.test.postgres")
        logger.logLevel = .warning
        return logger
    }

    static func open(_ url: String) async throws -> PostgresStore {
        try await PostgresStore.open(try PostgresLocation.parse(url).get(), logger: quiet)
    }

    /// 10 000 sessions, each claimed by two callers at once, on two stores (two nodes' pools) with
    /// different proposals: every pair agrees on one provider at epoch 1. Then every session is moved
    /// from epoch 1 by both at once: exactly one move each.
    @Test func racingClaimsAndMovesHaveOneWinner() async throws {
        let url = try await PostgresServer.shared().makeDatabase()
        let nodeA = try await Self.open(url)
        let nodeB = try await Self.open(url)
        let sessions = (0..<10_000).map { SessionID("race-\($0)")! }
        var disagreements = 0
        var doubleMoves = 0
        var noMoves = 0
        // Batches keep a few hundred statements in flight, not 20 000.
        for batch in stride(from: 0, to: sessions.count, by: 250) {
            let slice = sessions[batch..<min(batch + 250, sessions.count)]
            let claims = try await withThrowingTaskGroup(of: (Int, ProviderState, ProviderState).self) { group in
                for (i, id) in zip(slice.indices, slice) {
                    group.addTask {
                        async let a = nodeA.claimProvider(id, proposed: .p2p, atMs: 1)
                        async let b = nodeB.claimProvider(id, proposed: .relay, atMs: 1)
                        return (i, try await a, try await b)
                    }
                }
                return try await group.reduce(into: [(Int, ProviderState, ProviderState)]()) { $0.append($1) }
            }
            disagreements += claims.filter { $0.1 != $0.2 || $0.1.epoch != 1 }.count
            let moves = try await withThrowingTaskGroup(of: Int.self) { group in
                for id in slice {
                    group.addTask {
                        async let a = nodeA.compareAndSetProvider(id, expectedEpoch: 1, new: .sfu, reason: .failure, atMs: 2)
                        async let b = nodeB.compareAndSetProvider(id, expectedEpoch: 1, new: .relay, reason: .quality, atMs: 2)
                        return [try await a, try await b].filter { $0 }.count
                    }
                }
                return try await group.reduce(into: [Int]()) { $0.append($1) }
            }
            doubleMoves += moves.filter { $0 > 1 }.count
            noMoves += moves.filter { $0 == 0 }.count
        }
        #expect(disagreements == 0)
        #expect(doubleMoves == 0)
        #expect(noMoves == 0)
        // Each session has two history entries: the claim and the one move.
        let sample = try await nodeA.session(sessions[4_321])
        #expect(sample?.history.map(\.epoch) == [1, 2])
        #expect(sample?.provider?.epoch == 2)
    }

    /// Two nodes ask for the homes of the same 500 sessions at once: each session gets one home, and
    /// both nodes are told the same one.
    @Test func racingNodesAgreeOnEachHome() async throws {
        let url = try await PostgresServer.shared().makeDatabase()
        let nodeA = try await Self.open(url)
        let nodeB = try await Self.open(url)
        try await nodeA.heartbeat(NodeRecord(name: "a", address: nil, state: .serving), leaseMs: 60_000)
        try await nodeB.heartbeat(NodeRecord(name: "b", address: nil, state: .serving), leaseMs: 60_000)
        let answers = try await withThrowingTaskGroup(of: (SessionHome?, SessionHome?).self) { group in
            for i in 0..<500 {
                let id = SessionID("home-\(i)")!
                group.addTask {
                    async let a = nodeA.acquireHome(id, node: "a")
                    async let b = nodeB.acquireHome(id, node: "b")
                    return (try await a, try await b)
                }
            }
            return try await group.reduce(into: [(SessionHome?, SessionHome?)]()) { $0.append($1) }
        }
        let disagreements = answers.filter { pair in pair.0 == nil || pair.0 != pair.1 || pair.0?.generation != 1 }
        #expect(disagreements.isEmpty)
    }

    /// Score changes from two nodes at once all count (a read-then-write loses some).
    @Test func concurrentScoreChangesAllCount() async throws {
        let url = try await PostgresServer.shared().makeDatabase()
        let nodeA = try await Self.open(url)
        let nodeB = try await Self.open(url)
        _ = try await nodeA.adjustScore(.sfu, delta: 10 - 60)
        // 80 changes of +1 from 10 end at 90, below the clamp, unless some were lost.
        try await withThrowingTaskGroup(of: Void.self) { group in
            for i in 0..<80 {
                group.addTask { _ = try await (i % 2 == 0 ? nodeA : nodeB).adjustScore(.sfu, delta: 1) }
            }
            try await group.waitForAll()
        }
        #expect(try await nodeB.scores()[.sfu] == 90)
    }

    /// Nodes that start at once on a new database apply the schema once, and all open.
    @Test func nodesStartingTogetherMigrateOnce() async throws {
        let url = try await PostgresServer.shared().makeDatabase()
        let stores = try await withThrowingTaskGroup(of: PostgresStore.self) { group in
            for _ in 0..<4 { group.addTask { try await Self.open(url) } }
            return try await group.reduce(into: [PostgresStore]()) { $0.append($1) }
        }
        #expect(stores.count == 4)
        _ = try await stores[0].claimProvider(SessionID("m1")!, proposed: .p2p, atMs: 1)
        #expect(try await stores[3].lastEpoch(SessionID("m1")!) == 1)
    }

    /// A store opened again (a node restarted) finds everything, and a shared store leaves sessions
    /// open at start: another node may be serving them.
    @Test func everythingSurvivesAReopen() async throws {
        let url = try await PostgresServer.shared().makeDatabase()
        do {
            let store = try await Self.open(url)
            _ = try await store.claimProvider(s1, proposed: .p2p, atMs: 1)
            _ = try await store.compareAndSetProvider(s1, expectedEpoch: 1, new: .relay, reason: .quality, atMs: 2)
            _ = try await store.adjustScore(.relay, delta: -15)
            try await store.recordAlert(s1, AlertRecord(kind: .packetLoss, participant: a, value: 9, atMs: 3))
            store.close()
        }
        let store = try await Self.open(url)
        #expect(try await store.endSessionsLeftOpen(atMs: 4) == 0)
        #expect(try await store.session(s1)?.provider == ProviderState(name: .relay, epoch: 2))
        #expect(try await store.scores()[.relay] == 55)
        #expect(try await store.alerts(s1).map(\.kind) == [.packetLoss])
    }

    @Test func anUnreachableDatabaseIsAClearError() async throws {
        // A port nothing listens on: the server's, stopped.
        let server = try PostgresServer.start()
        let url = server.url(database: "postgres")
        server.stop()
        let error = await #expect(throws: StoreError.self) {
            _ = try await PostgresStore.open(try PostgresLocation.parse(url).get(), logger: Self.quiet, timeout: .seconds(2))
        }
        #expect(error?.code == .open)
        #expect("\(error.map(String.init(describing:)) ?? "")".contains("127.0.0.1:\(server.port)"))
    }

    @Test(arguments: [
        ("postgres://u:p%40ss@db.example.com:6543/tandem", "postgres://u@db.example.com:6543/tandem"),
        ("postgresql://u@127.0.0.1/tandem?sslmode=disable", "postgres://u@127.0.0.1:5432/tandem?sslmode=disable"),
        ("postgres://u@[::1]:5433/t?sslmode=verify-full&sslrootcert=/etc/ca.pem", "postgres://u@[::1]:5433/t?sslmode=verify-full"),
    ])
    func locationsParseAndHideTheirPassword(url: String, shown: String) throws {
        let location = try PostgresLocation.parse(url).get()
        #expect(location.description == shown)
        if url.contains("p%40ss") { #expect(location.password == "p@ss") }
    }

    @Test(arguments: [
        "postgres://db.example.com/tandem", "postgres://u@db.example.com", "postgres://u@db.example.com/", "mysql://u@h/d",
        "postgres://u@h/d?sslmode=maybe", "postgres://u@h/d?pool=3", "postgres://u@h/d?sslrootcert=/ca.pem", "postgres://u@h:0/d",
    ])
    func badLocationsAreRefused(url: String) {
        #expect(throws: PostgresLocation.LocationError.self) { try PostgresLocation.parse(url).get() }
    }
}
