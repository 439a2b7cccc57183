import TandemProtocol

/// Limits on reported RTT, loss and jitter; a metric past its limit counts as bad.
public struct QualityThresholds: Sendable, Equatable {
    public var rttMs: Double
    public var lossPct: Double
    public var jitterMs: Double

    public init(rttMs: Double, lossPct: Double, jitterMs: Double) {
        self.rttMs = rttMs
        self.lossPct = lossPct
        self.jitterMs = jitterMs
    }

    func isBad(_ r: HealthReport) -> Bool {
        (r.rttMs.map { $0 > rttMs } ?? false) || (r.lossPct.map { $0 > lossPct } ?? false)
            || (r.jitterMs.map { $0 > jitterMs } ?? false)
    }
}

/// When a session's SFU room is made ahead of need.
public enum SFUPreparation: String, Sendable, Equatable, CaseIterable {
    /// When the session starts: every switch is immediate, at one room per session.
    case sessionStart = "session-start"
    /// When a report first crosses an alert threshold: rooms only for sessions that may need them.
    case qualityTrend = "quality-trend"
    /// Only when a switch is due; the switch waits for the service.
    case onDemand = "on-demand"
}

/// The arbiter's policy. Defaults, and why:
/// - switching at RTT 400 ms, loss 8 %, jitter 60 ms: past these a call is hard to hold (ITU-T G.114 puts
///   one-way delay above 200 ms as unacceptable for conversation; Opus and VP8 conceal a few percent of
///   loss but not sustained 8 %);
/// - 3 consecutive reports (about 15 s at the 5 s heartbeat) so one bad sample never moves a session;
/// - a 30 s cool-down so a session never flaps between providers;
/// - alerts earlier than switches (300 ms, 5 %, 50 ms, 150 kbps) so operators see a trend first.
public struct ArbiterConfig: Sendable, Equatable {
    public var enabled: Set<ProviderName> = [.p2p]
    public var fallbackOrder: [ProviderName] = [.p2p, .relay, .sfu]
    /// Where a session goes when its quality stays bad.
    public var qualityTarget: ProviderName = .sfu
    public var switchThresholds = QualityThresholds(rttMs: 400, lossPct: 8, jitterMs: 60)
    public var consecutiveBadReports = 3
    public var coolDown: Duration = .seconds(30)
    public var alertThresholds = QualityThresholds(rttMs: 300, lossPct: 5, jitterMs: 50)
    public var lowBandwidthKbps: Double = 150
    /// Most participants in one session on any provider.
    public var maxParticipants = 16
    public var heartbeatInterval: Duration = .seconds(5)
    public var heartbeatTimeout: Duration = .seconds(15)
    /// A participant with no `health` report for this long is a stale peer.
    public var staleAfter: Duration = .seconds(15)
    /// Reports in a row that must agree before a quality level or the video ladder goes up.
    public var upgradeReports = 3
    /// When the session's SFU room and tokens are made, so that a switch to the SFU waits on nothing.
    public var sfuPreparation: SFUPreparation = .qualityTrend
    /// After the SFU service failed, no new attempt for this long.
    public var sfuRetryAfter: Duration = .seconds(30)
    /// Least time between two failure switches of one session. A failure inside it waits for its end (a
    /// real one is still failed then) instead of moving the session again at once.
    public var failureCoolDown: Duration = .seconds(2)
    /// Most failure switches of one session within `failureSwitchWindow`; past them the session stays
    /// where it is with a `switch_limit` alert. Three providers and an ICE restart each fit well inside.
    public var failureSwitchLimit = 6
    public var failureSwitchWindow: Duration = .seconds(600)
    /// The most one session moves any provider's learning score, up or down, over its whole life.
    public var sessionScoreCap = 15

    public init() {}

    /// Providers that serve at most two participants.
    public static func isPairOnly(_ p: ProviderName) -> Bool { p != .sfu }
}
