import Foundation
import NIOConcurrencyHelpers
import TandemArbiter
import TandemProtocol

/// A store that lives and dies with the process: for tests and throwaway dev servers.
public final class MemoryStore: SessionStore, ResumeLogInMemory, HomesOfOneProcess {
    struct State {
        var sessions: [SessionID: SessionRecord] = [:]
        var scores = ProviderScores()
        var presence: [SessionID: [ParticipantID: PresenceRecord]] = [:]
        var health: [SessionID: [ParticipantID: [HealthSample]]] = [:]
        var alerts: [SessionID: [AlertRecord]] = [:]
    }

    /// Samples and alerts kept per participant and per session; the memory store is not an archive.
    static let keptSamples = 64
    static let keptAlerts = keptAlertsPerSession

    private let state = NIOLockedValueBox(State())
    public let logs = MessageLogBook()
    public let homes = HomesInMemory { Int64(Date().timeIntervalSince1970 * 1000) }

    public init(scores: ProviderScores = ProviderScores()) {
        state.withLockedValue { $0.scores = scores }
    }

    public func claimProvider(_ session: SessionID, proposed: ProviderName, atMs: Int64) async throws -> ProviderState {
        state.withLockedValue { s in
            var record = s.sessions[session] ?? SessionRecord(session: session, provider: nil, lastEpoch: 0, history: [])
            if let live = record.provider { return live }
            let chosen = ProviderState(name: proposed, epoch: record.lastEpoch + 1)
            record.provider = chosen
            record.lastEpoch = chosen.epoch
            record.endedAtMs = nil
            record.history.append(HistoryEntry(epoch: chosen.epoch, provider: proposed, reason: .join, atMs: atMs))
            record.history.removeFirst(max(0, record.history.count - keptHistoryPerSession))
            s.sessions[session] = record
            return chosen
        }
    }

    public func compareAndSetProvider(
        _ session: SessionID, expectedEpoch: Int, new: ProviderName, reason: SwitchReason, atMs: Int64
    ) async throws -> Bool {
        state.withLockedValue { s in
            guard var record = s.sessions[session], let live = record.provider, live.epoch == expectedEpoch else { return false }
            record.provider = ProviderState(name: new, epoch: expectedEpoch + 1)
            record.lastEpoch = expectedEpoch + 1
            record.history.append(HistoryEntry(epoch: expectedEpoch + 1, provider: new, reason: reason, atMs: atMs))
            record.history.removeFirst(max(0, record.history.count - keptHistoryPerSession))
            s.sessions[session] = record
            return true
        }
    }

    public func lastEpoch(_ session: SessionID) async throws -> Int {
        state.withLockedValue { $0.sessions[session]?.lastEpoch ?? 0 }
    }

    public func session(_ session: SessionID) async throws -> SessionRecord? {
        state.withLockedValue { $0.sessions[session] }
    }

    public func endSession(_ session: SessionID, atMs: Int64) async throws {
        state.withLockedValue { s in
            s.sessions[session]?.provider = nil
            s.sessions[session]?.endedAtMs = atMs
            s.presence[session] = nil
        }
    }

    public func scores() async throws -> ProviderScores {
        state.withLockedValue { $0.scores }
    }

    public func adjustScore(_ provider: ProviderName, delta: Int) async throws -> ProviderScores {
        state.withLockedValue { s in
            s.scores.apply(delta, to: provider)
            return s.scores
        }
    }

    public func upsertPresence(_ session: SessionID, _ record: PresenceRecord) async throws {
        state.withLockedValue { $0.presence[session, default: [:]][record.participant] = record }
    }

    public func removePresence(_ session: SessionID, _ participant: ParticipantID) async throws {
        state.withLockedValue { $0.presence[session]?[participant] = nil }
        logs.drop(session, participant)
    }

    public func presence(_ session: SessionID) async throws -> [PresenceRecord] {
        state.withLockedValue { Array(($0.presence[session] ?? [:]).values).sorted { $0.participant < $1.participant } }
    }

    public func recordHealth(_ session: SessionID, _ sample: HealthSample) async throws {
        state.withLockedValue { s in
            // In place: copying the participant's samples out and back would copy them on every report.
            s.health[session, default: [:]][sample.participant, default: []].append(sample, keepingLast: Self.keptSamples)
        }
    }

    public func latestHealth(_ session: SessionID) async throws -> [ParticipantID: HealthSample] {
        state.withLockedValue { ($0.health[session] ?? [:]).compactMapValues(\.last) }
    }

    public func recordAlert(_ session: SessionID, _ alert: AlertRecord) async throws {
        state.withLockedValue { s in
            s.alerts[session, default: []].append(alert, keepingLast: Self.keptAlerts)
        }
    }

    /// A memory store starts empty: nothing was left open.
    public func endSessionsLeftOpen(atMs: Int64) async throws -> Int { 0 }

    public func alerts(_ session: SessionID) async throws -> [AlertRecord] {
        state.withLockedValue { $0.alerts[session] ?? [] }
    }

    public func cleanup(nowMs: Int64, policy: RetentionPolicy) async throws -> CleanupReport {
        state.withLockedValue { s in
            var report = CleanupReport()
            for (session, members) in s.presence {
                let stale = members.values.filter { nowMs - $0.lastSeenMs > policy.presenceStaleAfterMs }
                for record in stale { s.presence[session]?[record.participant] = nil }
                report.presence += stale.count
                if s.presence[session]?.isEmpty == true { s.presence[session] = nil }
            }
            for (session, byParticipant) in s.health {
                for (participant, samples) in byParticipant {
                    let kept = samples.filter { nowMs - $0.atMs <= policy.healthSamplesMs }
                    report.healthSamples += samples.count - kept.count
                    s.health[session]?[participant] = kept.isEmpty ? nil : kept
                }
            }
            for (session, record) in s.sessions {
                if let ended = record.endedAtMs, nowMs - ended > policy.finishedSessionsMs {
                    s.sessions[session] = nil
                    s.health[session] = nil
                    s.alerts[session] = nil
                    report.sessions += 1
                }
            }
            return report
        }
    }
}

extension Array {
    /// Appends, then drops the oldest elements beyond `limit`.
    mutating func append(_ element: Element, keepingLast limit: Int) {
        append(element)
        if count > limit { removeFirst(count - limit) }
    }
}
