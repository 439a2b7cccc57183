import TandemProtocol

/// A 0–100 call-quality score from RTT, loss and jitter, after the simplified ITU-T G.107 E-model:
/// R = 93.2 − delay impairment − loss impairment, scaled so that a perfect path scores 100.
public enum QualityScore {
    public static func score(rttMs: Double?, lossPct: Double?, jitterMs: Double?) -> Int {
        let effectiveLatency = (rttMs ?? 0) / 2 + 2 * (jitterMs ?? 0) + 10
        let delayImpairment = effectiveLatency < 160 ? effectiveLatency / 40 : (effectiveLatency - 120) / 10
        let r = 93.2 - delayImpairment - 2.5 * (lossPct ?? 0)
        return Int((max(0, min(93.2, r)) / 93.2 * 100).rounded())
    }

    public static func level(for score: Int) -> QualityLevel {
        switch score {
        case 85...: .excellent
        case 60..<85: .good
        case 30..<60: .poor
        default: .lost
        }
    }
}

/// One participant's quality level, smoothed fast-down/slow-up: a worse level is taken at once, a
/// better one only after `upgradeReports` reports in a row agree.
struct QualityTracker: Sendable, Equatable {
    private(set) var level: QualityLevel?
    private var betterStreak = 0
    private var betterFloor: QualityLevel = .excellent

    /// Takes one sample; returns the new level when it changed.
    mutating func observe(_ sampled: QualityLevel, upgradeReports: Int) -> QualityLevel? {
        guard let current = level else {
            level = sampled
            return sampled
        }
        if sampled < current {
            level = sampled
            betterStreak = 0
            return sampled
        }
        guard sampled > current else {
            betterStreak = 0
            return nil
        }
        betterFloor = betterStreak == 0 ? sampled : min(betterFloor, sampled)
        betterStreak += 1
        guard betterStreak >= upgradeReports else { return nil }
        betterStreak = 0
        level = betterFloor
        return betterFloor
    }
}

/// The 720/480/360/240 video ladder for one participant's uplink: down at once when the available
/// bitrate or loss calls for it, up one rung after `upgradeReports` good reports in a row.
public struct VideoLadder: Sendable, Equatable {
    public static let rungs = [720, 480, 360, 240]
    /// Available bitrate each rung needs, in kbps.
    public static let minimumKbps: [Int: Double] = [720: 1200, 480: 600, 360: 300, 240: 0]
    /// Loss above this takes one more rung off.
    public static let heavyLossPct: Double = 10

    public private(set) var maxHeight = 720
    private var upStreak = 0

    public init() {}

    /// The rung a report calls for, with the reason.
    static func target(bitrateKbps: Double, lossPct: Double?) -> (height: Int, reason: String) {
        var index = rungs.firstIndex { bitrateKbps >= minimumKbps[$0]! } ?? rungs.count - 1
        var reason = "bandwidth"
        if let loss = lossPct, loss > heavyLossPct, index < rungs.count - 1 {
            index += 1
            reason = "loss"
        }
        return (rungs[index], reason)
    }

    /// Takes one report; returns the new maximum height and its reason when it changed.
    public mutating func observe(bitrateKbps: Double, lossPct: Double?, upgradeReports: Int) -> (maxHeight: Int, reason: String)? {
        let (target, reason) = Self.target(bitrateKbps: bitrateKbps, lossPct: lossPct)
        if target < maxHeight {
            maxHeight = target
            upStreak = 0
            return (target, reason)
        }
        guard target > maxHeight else {
            upStreak = 0
            return nil
        }
        upStreak += 1
        guard upStreak >= upgradeReports else { return nil }
        upStreak = 0
        let index = Self.rungs.firstIndex(of: maxHeight)!
        maxHeight = Self.rungs[index - 1]
        return (maxHeight, "recovered")
    }
}
