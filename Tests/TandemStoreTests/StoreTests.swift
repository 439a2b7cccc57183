import Foundation
import Testing
import TandemArbiter
import TandemProtocol
import TandemPostgres
import TandemPostgresTestSupport
import Logging

@testable import TandemStore

let s1 = SessionID("s1")!
let a = ParticipantID("a")
let b = ParticipantID("b")

enum Backend: String, CaseIterable, Sendable {
    case memory, sqlite, postgres

    /// A new, empty store of this backend (PostgreSQL: a new database of the tests' own server).
    func make() async throws -> (any SessionStore, String?) {
        switch self {
        case .memory: return (MemoryStore(), nil)
        case .sqlite:
            let path = NSTemporaryDirectory() + "tandem-store-\(UUID().uuidString).db"
            return (try SQLiteStore(path: path), path)
        case .postgres:
            let url = try await PostgresServer.shared().makeDatabase()
            return (try await PostgresStoreTests.open(url), url)
        }
    }
}

extension SessionHome {
    func with(generation: Int) -> SessionHome { SessionHome(node: node, address: address, generation: generation) }
}

@Suite struct StoreContractTests {
    @Test(arguments: Backend.allCases)
    func claimIsGetOrSelectAndAtomic(_ backend: Backend) async throws {
        let (store, _) = try await backend.make()
        // Twenty racing first joiners proposing different providers: one selection wins for all.
        let results = try await withThrowingTaskGroup(of: ProviderState.self) { group in
            for i in 0..<20 {
                group.addTask { try await store.claimProvider(s1, proposed: i % 2 == 0 ? .p2p : .relay, atMs: 1) }
            }
            return try await group.reduce(into: [ProviderState]()) { $0.append($1) }
        }
        #expect(Set(results.map(\.name)).count == 1)
        #expect(results.allSatisfy { $0.epoch == 1 })
        let record = try await store.session(s1)
        #expect(record?.history.count == 1)
        #expect(record?.history.first?.reason == .join)
    }

    @Test(arguments: Backend.allCases)
    func compareAndSetMovesOnceFromTheExpectedEpoch(_ backend: Backend) async throws {
        let (store, _) = try await backend.make()
        _ = try await store.claimProvider(s1, proposed: .p2p, atMs: 1)
        let outcomes = try await withThrowingTaskGroup(of: Bool.self) { group in
            for _ in 0..<10 { group.addTask { try await store.compareAndSetProvider(s1, expectedEpoch: 1, new: .relay, reason: .failure, atMs: 2) } }
            return try await group.reduce(into: [Bool]()) { $0.append($1) }
        }
        #expect(outcomes.filter { $0 }.count == 1)
        let record = try await store.session(s1)
        #expect(record?.provider == ProviderState(name: .relay, epoch: 2))
        #expect(record?.history.map(\.epoch) == [1, 2])
        #expect(record?.history.last?.reason == .failure)
        #expect(try await store.compareAndSetProvider(SessionID("nobody")!, expectedEpoch: 0, new: .p2p, reason: .admin, atMs: 3) == false)
    }

    @Test(arguments: Backend.allCases)
    func endedSessionKeepsItsEpochForTheNextClaim(_ backend: Backend) async throws {
        let (store, _) = try await backend.make()
        _ = try await store.claimProvider(s1, proposed: .p2p, atMs: 1)
        _ = try await store.compareAndSetProvider(s1, expectedEpoch: 1, new: .p2p, reason: .failure, atMs: 2)
        try await store.endSession(s1, atMs: 3)
        #expect(try await store.session(s1)?.provider == nil)
        #expect(try await store.lastEpoch(s1) == 2)
        #expect(try await store.compareAndSetProvider(s1, expectedEpoch: 2, new: .relay, reason: .admin, atMs: 4) == false)
        #expect(try await store.claimProvider(s1, proposed: .relay, atMs: 5) == ProviderState(name: .relay, epoch: 3))
    }

    @Test(arguments: Backend.allCases)
    func scoresClampAndAccumulate(_ backend: Backend) async throws {
        let (store, _) = try await backend.make()
        #expect(try await store.scores() == ProviderScores())
        _ = try await store.adjustScore(.p2p, delta: 15)
        let after = try await store.adjustScore(.relay, delta: -15)
        #expect(after[.p2p] == 95 && after[.relay] == 55 && after[.sfu] == 60)
        _ = try await store.adjustScore(.p2p, delta: 15)
        #expect(try await store.scores()[.p2p] == 100)
    }

    @Test(arguments: Backend.allCases)
    func presenceHealthAndAlerts(_ backend: Backend) async throws {
        let (store, _) = try await backend.make()
        try await store.upsertPresence(s1, PresenceRecord(participant: a, name: "A", state: .active, node: "n1", lastSeenMs: 10))
        try await store.upsertPresence(s1, PresenceRecord(participant: b, name: nil, state: .active, node: "n1", lastSeenMs: 10))
        try await store.upsertPresence(s1, PresenceRecord(participant: a, name: "A", state: .reconnecting, node: "n1", lastSeenMs: 20))
        #expect(try await store.presence(s1).map(\.state) == [.reconnecting, .active])
        try await store.removePresence(s1, b)
        #expect(try await store.presence(s1).map(\.participant) == [a])

        let r1 = HealthReport(epoch: 1, provider: .p2p, media: .connecting)
        let r2 = HealthReport(epoch: 1, provider: .p2p, media: .connected, rttMs: 40, lossPct: 0.5, jitterMs: 3, bitrateKbps: 900, frameHeight: 480, candidateType: .srflx)
        try await store.recordHealth(s1, HealthSample(participant: a, report: r1, atMs: 100))
        try await store.recordHealth(s1, HealthSample(participant: a, report: r2, atMs: 200))
        #expect(try await store.latestHealth(s1)[a]?.report == r2)

        try await store.recordAlert(s1, AlertRecord(kind: .highLatency, participant: a, value: 350, atMs: 5))
        try await store.recordAlert(s1, AlertRecord(kind: .stalePeer, participant: a, value: 15000, atMs: 6))
        #expect(try await store.alerts(s1).map(\.kind) == [.highLatency, .stalePeer])
    }

    @Test(arguments: Backend.allCases)
    func messageLogReplaysOrRefuses(_ backend: Backend) async throws {
        let (store, _) = try await backend.make()
        try await store.appendMessages(s1, (1...5).map { LoggedMessage(participant: a, seq: $0, frame: [UInt8($0)]) })
        #expect(try await store.messages(s1, a, after: 2) == [[3], [4], [5]])
        #expect(try await store.messages(s1, a, after: 5) == [])
        #expect(try await store.messages(s1, a, after: 9) == nil)
        #expect(try await store.messages(s1, b, after: 0) == nil)
        try await store.dropMessages(s1, a)
        #expect(try await store.messages(s1, a, after: 2) == nil)
    }

    @Test(arguments: Backend.allCases)
    func cleanupRemovesWhatIsOld(_ backend: Backend) async throws {
        let (store, _) = try await backend.make()
        let day: Int64 = 86_400_000
        try await store.upsertPresence(s1, PresenceRecord(participant: a, name: nil, state: .active, node: "n", lastSeenMs: 0))
        try await store.upsertPresence(s1, PresenceRecord(participant: b, name: nil, state: .active, node: "n", lastSeenMs: 2 * day))
        try await store.recordHealth(s1, HealthSample(participant: a, report: HealthReport(epoch: 1, provider: .p2p, media: .new), atMs: 0))
        let old = SessionID("old")!
        _ = try await store.claimProvider(old, proposed: .p2p, atMs: 0)
        try await store.endSession(old, atMs: 0)
        _ = try await store.claimProvider(s1, proposed: .p2p, atMs: 0)
        let report = try await store.cleanup(nowMs: 2 * day, policy: RetentionPolicy())
        #expect(report.presence == 1 && report.healthSamples == 1 && report.sessions == 1)
        #expect(try await store.session(old) == nil)
        #expect(try await store.session(s1) != nil)  // live sessions stay
        #expect(try await store.presence(s1).map(\.participant) == [b])
    }

    /// A session's home is a node whose lease runs; it moves only when that lease has run out, to a
    /// node whose own lease runs, at the next generation.
    @Test(arguments: Backend.allCases)
    func homesGoToLiveNodesOnly(_ backend: Backend) async throws {
        let (store, _) = try await backend.make()
        #expect(try await store.acquireHome(s1, node: "n1") == nil)  // not registered
        try await store.heartbeat(NodeRecord(name: "n1", address: "10.0.0.1:8443", state: .serving), leaseMs: 60_000)
        try await store.heartbeat(NodeRecord(name: "n2", address: "10.0.0.2:8443", state: .serving), leaseMs: 60_000)
        #expect(try await store.liveNodes().map(\.name) == ["n1", "n2"])
        let first = SessionHome(node: "n1", address: "10.0.0.1:8443", generation: 1)
        #expect(try await store.acquireHome(s1, node: "n1") == first)
        #expect(try await store.acquireHome(s1, node: "n2") == first)  // n1's lease runs
        #expect(try await store.acquireHome(s1, node: "n1") == first)  // again: the same tenure
        // n1's lease runs out: n2 takes the session over, at the next generation; n1 cannot take it back.
        try await store.heartbeat(NodeRecord(name: "n1", address: "10.0.0.1:8443", state: .serving), leaseMs: 1)
        try await Task.sleep(for: .milliseconds(200))
        #expect(try await store.liveNodes().map(\.name) == ["n2"])
        let second = SessionHome(node: "n2", address: "10.0.0.2:8443", generation: 2)
        #expect(try await store.acquireHome(s1, node: "n2") == second)
        #expect(try await store.acquireHome(s1, node: "n1") == second)
        // A draining home gives its sessions to the next serving node that asks, and takes no new ones.
        try await store.heartbeat(NodeRecord(name: "n2", address: "10.0.0.2:8443", state: .draining), leaseMs: 60_000)
        try await store.heartbeat(NodeRecord(name: "n3", address: nil, state: .serving), leaseMs: 60_000)
        let fresh = SessionID("fresh")!
        #expect(try await store.acquireHome(fresh, node: "n2") == nil)
        #expect(try await store.acquireHome(s1, node: "n3") == SessionHome(node: "n3", address: nil, generation: 3))
        try await store.heartbeat(NodeRecord(name: "n2", address: "10.0.0.2:8443", state: .serving), leaseMs: 60_000)
        #expect(try await store.acquireHome(s1, node: "n2") == SessionHome(node: "n3", address: nil, generation: 3))
        try await store.removeNode("n3")
        #expect(try await store.acquireHome(s1, node: "n2") == second.with(generation: 4))
        try await store.releaseHome(s1, node: "n1")  // not n1's to release
        #expect(try await store.home(s1) == second.with(generation: 4))
        try await store.releaseHome(s1, node: "n2")
        #expect(try await store.home(s1) == nil)
        _ = try await store.acquireHome(s1, node: "n2")
        try await store.removeNode("n2")
        #expect(try await store.home(s1) == nil)  // its node is gone
        #expect(try await store.liveNodes().isEmpty)
    }

    @Test func sqliteKeepsEverythingAcrossAReopen() async throws {
        let path = NSTemporaryDirectory() + "tandem-reopen-\(UUID().uuidString).db"
        do {
            let store = try SQLiteStore(path: path)
            _ = try await store.claimProvider(s1, proposed: .p2p, atMs: 1)
            _ = try await store.compareAndSetProvider(s1, expectedEpoch: 1, new: .relay, reason: .quality, atMs: 2)
            _ = try await store.adjustScore(.relay, delta: -15)
            try await store.recordAlert(s1, AlertRecord(kind: .packetLoss, participant: a, value: 9, atMs: 3))
        }
        let reopened = try SQLiteStore(path: path)
        #expect(try await reopened.scores()[.relay] == 55)
        #expect(try await reopened.session(s1)?.provider == ProviderState(name: .relay, epoch: 2))
        #expect(try await reopened.alerts(s1).count == 1)
    }

    /// A run that crashed left its sessions open; the next start ends them, and their epochs go on.
    @Test func sqliteEndsTheSessionsACrashLeftOpen() async throws {
        let path = NSTemporaryDirectory() + "tandem-crash-\(UUID().uuidString).db"
        do {
            let store = try SQLiteStore(path: path)
            _ = try await store.claimProvider(s1, proposed: .p2p, atMs: 1)
            try await store.upsertPresence(s1, PresenceRecord(participant: a, name: nil, state: .active, node: "n", lastSeenMs: 1))
        }
        let reopened = try SQLiteStore(path: path)
        #expect(try await reopened.endSessionsLeftOpen(atMs: 5) == 1)
        #expect(try await reopened.session(s1)?.provider == nil)
        #expect(try await reopened.session(s1)?.endedAtMs == 5)
        #expect(try await reopened.presence(s1).isEmpty)
        #expect(try await reopened.claimProvider(s1, proposed: .relay, atMs: 6) == ProviderState(name: .relay, epoch: 2))
        #expect(try await reopened.endSessionsLeftOpen(atMs: 7) == 1)
        #expect(try await reopened.endSessionsLeftOpen(atMs: 8) == 0)
    }

    /// A session's alerts are kept to the newest `keptAlertsPerSession`.
    @Test(arguments: Backend.allCases)
    func alertsAreBoundedPerSession(_ backend: Backend) async throws {
        let (store, _) = try await backend.make()
        for i in 0..<(keptAlertsPerSession + 40) {
            try await store.recordAlert(s1, AlertRecord(kind: .packetLoss, participant: a, value: Double(i), atMs: Int64(i)))
        }
        let kept = try await store.alerts(s1)
        #expect(kept.count == keptAlertsPerSession)
        #expect(kept.first?.value == 40 && kept.last?.value == Double(keptAlertsPerSession + 39))
    }

    /// A session's provider history is kept to the newest `keptHistoryPerSession` changes, across a
    /// restart of the session under the same id; its epochs go on.
    @Test(arguments: Backend.allCases)
    func historyIsBoundedPerSession(_ backend: Backend) async throws {
        let (store, _) = try await backend.make()
        _ = try await store.claimProvider(s1, proposed: .p2p, atMs: 0)
        for epoch in 1..<(keptHistoryPerSession + 30) {
            #expect(try await store.compareAndSetProvider(s1, expectedEpoch: epoch, new: epoch % 2 == 0 ? .p2p : .relay, reason: .quality, atMs: Int64(epoch)))
        }
        try await store.endSession(s1, atMs: 1000)
        #expect(try await store.claimProvider(s1, proposed: .relay, atMs: 1001) == ProviderState(name: .relay, epoch: keptHistoryPerSession + 31))
        let history = try #require(try await store.session(s1)?.history)
        #expect(history.count == keptHistoryPerSession)
        #expect(history.map(\.epoch) == Array(32...(keptHistoryPerSession + 31)))
        #expect(history.last?.reason == .join && history.first?.reason == .quality)
    }

    /// Health samples are written behind the caller (SQLite: a burst in one transaction); a read sees
    /// every one recorded before it.
    @Test(arguments: Backend.allCases)
    func aBurstOfHealthSamplesIsReadBackWhole(_ backend: Backend) async throws {
        let (store, _) = try await backend.make()
        let people = [ParticipantID("a"), ParticipantID("b"), ParticipantID("c")]
        for i in 0..<300 {
            let report = HealthReport(epoch: 1, provider: .p2p, media: .connected, rttMs: Double(i))
            try await store.recordHealth(s1, HealthSample(participant: people[i % 3], report: report, atMs: Int64(i)))
        }
        let latest = try await store.latestHealth(s1)
        #expect(latest.mapValues(\.atMs) == [people[0]: 297, people[1]: 298, people[2]: 299])
        #expect(latest[people[2]]?.report.rttMs == 299)
    }

    @Test func sqliteRefusesAnUnopenablePath() {
        #expect(throws: StoreError.self) { try SQLiteStore(path: "/nonexistent-dir/x/y.db") }
    }
}

@Suite struct MessageLogTests {
    @Test func boundedByCount() {
        var log = MessageLog(maxMessages: 3)
        for seq in 1...10 { log.append(seq: seq, [UInt8(seq)]) }
        #expect(log.after(7) == [[8], [9], [10]])
        #expect(log.after(6) == nil)  // 7 fell out: a replay would have a gap
        #expect(log.after(10) == [])
    }

    @Test func boundedByBytes() {
        var log = MessageLog(maxMessages: 100, maxBytes: 10)
        for seq in 1...5 { log.append(seq: seq, [UInt8](repeating: 0, count: 4)) }
        #expect(log.after(3)?.count == 2)
        #expect(log.after(2) == nil)
    }
}
