import ArgumentParser
import Foundation
import HummingbirdWSClient
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOSSL
import NIOWebSocket
import TandemProtocol

/// Soak: thousands of two-party sessions held against one `tandem serve` (its default embedded store)
/// for minutes, with churn, printing the server's resources every minute and checking that every count
/// goes back to zero once the load stops.
struct Soak: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Hold many sessions with churn (joins, leaves, switches, resumes, bad messages) and watch the server's resources.")

    @Option(help: "Two-party sessions held at once.")
    var sessions = 5000
    @Option(help: "Minutes of load.")
    var minutes = 10.0
    @Option(help: "Seconds over which the sessions first join.")
    var ramp = 40.0
    @Option(help: "A session's life in seconds, LOW-HIGH; a new one takes its place when it ends.")
    var lifetime = "60-300"
    @Option(help: "Seconds to wait, after the load, for every count to reach zero.")
    var drain = 60.0
    @Option(help: "The tandem executable (release build).")
    var tandem = ".build/release/tandem"
    @Option(help: "The server's store: its default (SQLite in the data directory) or memory.")
    var store = "default"

    func run() async throws {
        let bounds = lifetime.split(separator: "-").compactMap { Double($0) }
        guard bounds.count == 2, bounds[0] > 5, bounds[1] >= bounds[0] else { throw ValidationError("--lifetime LOW-HIGH, LOW over 5 s") }
        guard sessions > 0, minutes > 0 else { throw ValidationError("--sessions and --minutes must be positive") }
        let limit = try SoakHost.raiseOpenFiles(needed: sessions * 3 + 4096)

        let work = NSTemporaryDirectory() + "tandem-soak-\(getpid())"
        try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: work) }
        let tls = try ServerProcess.devCertificates(tandem: tandem, into: work + "/certs")

        // The default store (SQLite in the data directory); p2p and the relay, so that a failure moves a
        // session to the relay and back.
        let server = try ServerProcess(
            name: "tandem", executable: tandem,
            arguments: ["serve", "--dev", "--listen", "127.0.0.1:0", "--data-dir", work, "--log-level", "notice", "--providers", "p2p,relay"]
                + (store == "default" ? [] : ["--store", store]),
            portPrefix: "serving https://127.0.0.1:")
        defer { server.stop() }
        let metrics = MetricsReader(port: server.port, tls: tls)

        say("soak: store \(store), \(sessions) sessions (\(sessions * 2) sockets) for \(minutes) min, lives of \(lifetime) s, \(ProcessInfo.processInfo.activeProcessorCount) cores, open files \(limit)")
        say("(client and server share the machine)\n")
        let idle = try await Snapshot.take(server, metrics)
        say("idle       " + idle.line)

        let plan = SoakPlan(
            sessions: sessions, lifetime: bounds[0]...bounds[1], ramp: .milliseconds(Int64(ramp * 1000)),
            url: "wss://127.0.0.1:\(server.port)/v1/signal", tls: tls, runID: "\(getpid())")
        let stats = SoakStats()
        let start = ContinuousClock.now
        let stopAt = start + .milliseconds(Int64(minutes * 60_000))
        let load = Task { await SoakLoad(plan: plan, stats: stats, stopAt: stopAt).run() }

        say("\n minute  CPU %   RSS MB  heap MB   fds  threads  sessions  tasks  sockets  joins  leaves  switches  resumes  bad  unexpected  ping p50/p99 ms  join p99 ms")
        var minute = 0
        var firstMinute: Snapshot?
        var peaks = (rss: 0, heap: 0, fds: 0)
        // The server's CPU time in each minute, as a share of one core.
        var (lastCPU, lastAt) = (server.cpu(), ContinuousClock.now)
        while ContinuousClock.now < stopAt {
            minute += 1
            try? await Task.sleep(until: min(stopAt, start + .seconds(60 * minute)))
            let snap = try await Snapshot.take(server, metrics)
            let figures = stats.take()
            // The last minute's figures are taken as everybody leaves: not a load figure.
            if minute == 1 { firstMinute = snap } else if ContinuousClock.now < stopAt {
                peaks = (max(peaks.rss, snap.rss), max(peaks.heap, snap.heap), max(peaks.fds, snap.fds))
            }
            let cpu = server.cpu()
            let cpuShare = (cpu - lastCPU).seconds / (ContinuousClock.now - lastAt).seconds * 100
            (lastCPU, lastAt) = (cpu, ContinuousClock.now)
            say(String(format: "%7d  %5.0f  %7.1f  %7.1f  %5d  %7d  %8d  %5d  %7d", minute, cpuShare, Double(snap.rss) / 1e6, Double(snap.heap) / 1e6, snap.fds, snap.threads, snap.sessions, snap.tasks, snap.sockets)
                + String(format: "  %5d  %6d  %8d  %7d  %3d  %10d", figures.joins, figures.leaves, figures.switches, figures.resumes, figures.bad, figures.unexpected)
                + String(format: "  %6.1f / %6.1f  %11.1f", figures.pingP50 * 1e3, figures.pingP99 * 1e3, figures.joinP99 * 1e3))
            for note in figures.notes { say("           unexpected: \(note)") }
        }
        await load.value

        // The load stopped: every participant has left or gone quiet; quiet ones time out.
        let drainStart = ContinuousClock.now
        var last = try await Snapshot.take(server, metrics)
        while !last.empty, ContinuousClock.now - drainStart < .milliseconds(Int64(drain * 1000)) {
            try? await Task.sleep(for: .seconds(1))
            last = try await Snapshot.take(server, metrics)
        }
        let waited = ContinuousClock.now - drainStart
        let total = stats.totals()
        say("\nafter load " + last.line + String(format: "  (%.0f s after the load stopped)", waited.seconds))
        say("totals     \(total.joins) joins, \(total.leaves) leaves, \(total.switches) switches, \(total.resumes) resumes, \(total.bad) bad messages answered, \(total.unexpected) unexpected")
        if let first = firstMinute, minute > 1 {
            say(String(format: "flatness   after minute 1: RSS %.1f MB, heap in use %.1f MB, fds %d; highest later: RSS %.1f MB (%+.1f%%), heap in use %.1f MB (%+.1f%%), fds %d",
                Double(first.rss) / 1e6, Double(first.heap) / 1e6, first.fds, Double(peaks.rss) / 1e6, (Double(peaks.rss) / Double(max(1, first.rss)) - 1) * 100,
                Double(peaks.heap) / 1e6, (Double(peaks.heap) / Double(max(1, first.heap)) - 1) * 100, peaks.fds))
        }
        say(last.empty ? "counts     all back to zero" : "counts     NOT back to zero")
        // The server gives free heap back once a minute.
        try? await Task.sleep(for: .seconds(65))
        say("a minute later " + (try await Snapshot.take(server, metrics)).line)
        if !last.empty || total.unexpected > 0 { throw ExitCode(1) }
    }
}

/// What the soak sets up: sessions, how long each lives, and where to connect.
struct SoakPlan: Sendable {
    var sessions: Int
    var lifetime: ClosedRange<Double>
    var ramp: Duration
    var url: String
    var tls: TLSConfiguration
    var runID: String
    var heartbeat: Duration = .seconds(5)
}

/// The server's resources at one moment: from /proc, and its own gauges from /metrics.
struct Snapshot {
    var rss: Int
    var fds: Int
    var threads: Int
    var sessions: Int
    var tasks: Int
    var sockets: Int
    var participants: Int
    /// The C heap's bytes in use (a leak grows it; RSS also keeps what the allocator holds free).
    var heap: Int

    /// Nothing of a session is left: no room, no room task, no participant, no signaling socket.
    var empty: Bool { sessions == 0 && tasks == 0 && participants == 0 && sockets == 0 }

    var line: String {
        String(format: "RSS %.1f MB, heap in use %.1f MB, %d fds, %d threads, %d sessions, %d session tasks, %d participants, %d sockets",
            Double(rss) / 1e6, Double(heap) / 1e6, fds, threads, sessions, tasks, participants, sockets)
    }

    static func take(_ server: ServerProcess, _ metrics: MetricsReader) async throws -> Snapshot {
        let m = try await metrics.read()
        let fds = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(server.pid)/fd").count) ?? -1
        let threads = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(server.pid)/task").count) ?? -1
        // One of the sockets is the one reading these figures.
        return Snapshot(
            rss: server.rss(), fds: fds, threads: threads, sessions: Int(m["tandem_sessions"] ?? -1), tasks: Int(m["tandem_session_tasks"] ?? -1),
            sockets: Int(m["tandem_connections"] ?? -1), participants: Int(m["tandem_participants"] ?? -1),
            heap: Int(m[#"tandem_heap_bytes{state="in_use"}"#] ?? -1))
    }
}

/// Counts and latencies of the load, taken a minute at a time.
final class SoakStats: Sendable {
    struct Figures {
        var joins = 0
        var leaves = 0
        var switches = 0
        var resumes = 0
        var bad = 0
        var unexpected = 0
        var notes: [String] = []
        var pings: [Int64] = []
        var joinTimes: [Int64] = []

        /// Adds `other`'s counts (not its latencies).
        mutating func add(_ other: Figures) {
            joins += other.joins
            leaves += other.leaves
            switches += other.switches
            resumes += other.resumes
            bad += other.bad
            unexpected += other.unexpected
        }

        var pingP50: Double { Self.percentile(pings, 0.5) }
        var pingP99: Double { Self.percentile(pings, 0.99) }
        var joinP99: Double { Self.percentile(joinTimes, 0.99) }

        static func percentile(_ values: [Int64], _ p: Double) -> Double {
            guard !values.isEmpty else { return 0 }
            let sorted = values.sorted()
            return Double(sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))]) / 1e9
        }
    }

    private let minute = NIOLockedValueBox(Figures())
    private let total = NIOLockedValueBox(Figures())

    func count(_ edit: @Sendable (inout Figures) -> Void) { minute.withLockedValue(edit) }

    func unexpected(_ what: String) {
        count { f in
            f.unexpected += 1
            if f.notes.count < 5 { f.notes.append(String(what.prefix(300))) }
        }
    }

    /// The minute's figures; their counts go to the totals.
    func take() -> Figures {
        minute.withLockedValue { f in
            defer { f = Figures() }
            total.withLockedValue { $0.add(f) }
            return f
        }
    }

    func totals() -> Figures {
        minute.withLockedValue { f in
            total.withLockedValue { t in
                var sum = t
                sum.add(f)
                return sum
            }
        }
    }
}

/// Every session slot: a session lives, ends, and another takes its place until the load stops.
struct SoakLoad {
    let plan: SoakPlan
    let stats: SoakStats
    let stopAt: ContinuousClock.Instant

    func run() async {
        let start = ContinuousClock.now
        await withTaskGroup(of: Void.self) { group in
            for slot in 0..<plan.sessions {
                let begin = start + plan.ramp * (Double(slot) / Double(plan.sessions))
                group.addTask {
                    try? await Task.sleep(until: begin)
                    var generation = 0
                    while ContinuousClock.now < stopAt {
                        generation += 1
                        await session("soak-\(plan.runID)-\(slot)-\(generation)")
                    }
                }
            }
        }
    }

    /// One session: two participants, each with its own script.
    private func session(_ id: String) async {
        let life = Duration.milliseconds(Int64(Double.random(in: plan.lifetime) * 1000))
        let end = min(stopAt, ContinuousClock.now + life)
        // One in ten sessions ends with its participants gone quiet instead of leaving: the server's
        // heartbeat timeout ends it (unless the load has stopped, when everybody leaves).
        let vanish = Double.random(in: 0..<1) < 0.1
        let scripts = [
            ParticipantScript(
                session: id, end: end, stopAt: stopAt, vanish: vanish, failAt: Double.random(in: 0..<1) < 0.3 ? 0.3 : nil, resumeAt: nil,
                badAt: Double.random(in: 0..<1) < 0.3 ? 0.7 : nil),
            ParticipantScript(
                session: id, end: end, stopAt: stopAt, vanish: vanish, failAt: nil, resumeAt: Double.random(in: 0..<1) < 0.3 ? 0.5 : nil,
                badAt: Double.random(in: 0..<1) < 0.3 ? 0.6 : nil),
        ]
        await withTaskGroup(of: Void.self) { group in
            for script in scripts { group.addTask { await script.run(plan: plan, stats: stats) } }
        }
    }
}

/// What one participant does in its session: joins, heartbeats (a ping and a health report every
/// 5 s), maybe reports a media failure (a switch), maybe drops its socket and resumes, maybe sends
/// three bad messages, then leaves (or goes quiet). Fractions are of the session's life.
struct ParticipantScript: Sendable {
    let session: String
    let end: ContinuousClock.Instant
    let stopAt: ContinuousClock.Instant
    let vanish: Bool
    let failAt: Double?
    let resumeAt: Double?
    let badAt: Double?

    /// What the participant knows of itself, across its sockets.
    final class State: Sendable {
        struct Values {
            var participant: String?
            var resumeKey: String?
            var lastSeq = 0
            var epoch = 1
            var provider = "p2p"
            var joinedAt: ContinuousClock.Instant?
            var badAnswers = 0
            var resumed = false
            /// This side has said leave or closed: the server's close may race its own (a reset).
            var leaving = false
        }
        let values = NIOLockedValueBox(Values())
    }

    func run(plan: SoakPlan, stats: SoakStats) async {
        let state = State()
        let begin = ContinuousClock.now
        let (end, life) = (end, end - begin)
        let (resume, fail, bad) = (resumeAt.map { begin + life * $0 }, failAt.map { begin + life * $0 }, badAt.map { begin + life * $0 })
        var logger = Logger(label: "soak-client")
        logger.logLevel = .critical
        let config = WebSocketClientConfiguration(maxFrameSize: 1 << 16, autoPing: .disabled, sniHostname: "localhost")
        // The first socket lives until the resume (if any), the second from it to the end.
        for leg in 0..<(resume == nil ? 1 : 2) {
            let until = leg == 0 ? (resume ?? end) : end
            let resuming = leg == 1
            if resuming, state.values.withLockedValue({ $0.participant }) == nil { return }
            state.values.withLockedValue { $0.leaving = false }
            do {
                try await WebSocketClient.connect(url: plan.url, configuration: config, tlsConfiguration: plan.tls, logger: logger) {
                    inbound, outbound, _ in
                    try await talk(
                        inbound: inbound, outbound: outbound, state: state, stats: stats, plan: plan, until: until,
                        lastLeg: leg == (resume == nil ? 0 : 1), resuming: resuming, failAt: fail, badAt: bad)
                }
            } catch {
                if state.values.withLockedValue({ $0.leaving }) { continue }
                stats.unexpected("socket: \(error)")
                return
            }
        }
    }

    private func talk(
        inbound: WebSocketInboundStream, outbound: WebSocketOutboundWriter, state: State, stats: SoakStats, plan: SoakPlan,
        until: ContinuousClock.Instant, lastLeg: Bool, resuming: Bool, failAt: ContinuousClock.Instant?, badAt: ContinuousClock.Instant?
    ) async throws {
        let welcomed = AsyncStream<Bool>.makeStream()
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                let sentAt = ContinuousClock.now
                if resuming {
                    let (id, key, seq) = state.values.withLockedValue { ($0.participant ?? "", $0.resumeKey ?? "", $0.lastSeq) }
                    try await outbound.write(.text(#"{"type":"join","session":"\#(session)","resume":{"participant":"\#(id)","key":"\#(key)","lastSeq":\#(seq)}}"#))
                } else {
                    try await outbound.write(.text(#"{"type":"join","session":"\#(session)","name":"soak"}"#))
                }
                var iterator = welcomed.stream.makeAsyncIterator()
                guard await iterator.next() == true else { return }
                let joinTime = ContinuousClock.now - sentAt
                stats.count { f in
                    if resuming { f.resumes += 1 } else { f.joins += 1 }
                    f.joinTimes.append(Int64(joinTime.seconds * 1e9))
                }
                var failPending = failAt
                var badPending = badAt
                var nextBeat = ContinuousClock.now + .milliseconds(Int64.random(in: 0..<5000))
                while true {
                    let wake = [nextBeat, until, failPending, badPending].compactMap { $0 }.min()!
                    try await Task.sleep(until: wake)
                    let now = ContinuousClock.now
                    if now >= until { break }
                    let (epoch, provider) = state.values.withLockedValue { ($0.epoch, $0.provider) }
                    if let f = failPending, now >= f {
                        failPending = nil
                        try await outbound.write(.text(#"{"type":"health","epoch":\#(epoch),"provider":"\#(provider)","media":"failed"}"#))
                    }
                    if let b = badPending, now >= b {
                        badPending = nil
                        try await outbound.write(.text(#"{"type":"nope"}"#))
                        try await outbound.write(.text(#"{"type":"signal","to":"#))
                        try await outbound.write(.text(#"{"type":"signal","to":"p-nobody","data":{"kind":"offer","sdp":"v=0","epoch":\#(epoch)}}"#))
                    }
                    if now >= nextBeat {
                        nextBeat += plan.heartbeat
                        try await outbound.write(.text(#"{"type":"ping","t":\#(Int64((now - soakOrigin).seconds * 1e9))}"#))
                        try await outbound.write(
                            .text(#"{"type":"health","epoch":\#(epoch),"provider":"\#(provider)","media":"connected","rttMs":40,"lossPct":0.5,"jitterMs":5}"#))
                    }
                }
                state.values.withLockedValue { $0.leaving = true }
                if lastLeg, !vanish || ContinuousClock.now >= stopAt {
                    try await outbound.write(.text(#"{"type":"leave"}"#))
                    stats.count { $0.leaves += 1 }
                } else {
                    // Gone without a word (a dropped socket before a resume, or a participant gone quiet).
                    try await outbound.close(.goingAway, reason: nil)
                }
            }
            var welcomeSeen = false
            defer { if !welcomeSeen { welcomed.continuation.yield(false) } }
            for try await message in inbound.messages(maxSize: 1 << 16) {
                guard case .text(let text) = message, let json = try? JSONParser.parse(Array(text.utf8)) else { continue }
                let seq = json["seq"]?.intValue ?? 0
                state.values.withLockedValue { v in if seq > v.lastSeq { v.lastSeq = seq } }
                switch json["type"]?.stringValue {
                case "welcome":
                    state.values.withLockedValue { v in
                        v.participant = json["participant"]?.stringValue
                        v.resumeKey = json["resumeKey"]?.stringValue
                        v.epoch = json["provider"]?["epoch"]?.intValue ?? v.epoch
                        v.provider = json["provider"]?["name"]?.stringValue ?? v.provider
                    }
                    if resuming, json["resumed"] != .bool(true) { stats.unexpected("a resume was welcomed as a new join") }
                    welcomeSeen = true
                    welcomed.continuation.yield(true)
                case "provider":
                    state.values.withLockedValue { v in
                        v.epoch = json["epoch"]?.intValue ?? v.epoch
                        v.provider = json["name"]?.stringValue ?? v.provider
                    }
                    if failAt != nil { stats.count { $0.switches += 1 } }
                case "pong":
                    if let t = json["t"]?.doubleValue {
                        let rtt = Int64((ContinuousClock.now - soakOrigin).seconds * 1e9) - Int64(t)
                        stats.count { $0.pings.append(rtt) }
                    }
                case "error":
                    let code = json["code"]?.stringValue ?? ""
                    if badAt != nil, ["unknown_type", "bad_message", "unknown_peer"].contains(code) {
                        stats.count { $0.bad += 1 }
                    } else {
                        stats.unexpected("error \(text)")
                    }
                default:
                    continue
                }
            }
            if !welcomeSeen { stats.unexpected("\(resuming ? "resume" : "join") got no welcome") }
            group.cancelAll()
            try? await group.waitForAll()
        }
    }
}

let soakOrigin = ContinuousClock.now

/// A line of the report, out at once (a minute's line is worth seeing while the soak runs).
func say(_ line: String) {
    print(line)
    fflush(nil)
}

/// Reads the server's gauges from /metrics over HTTPS.
struct MetricsReader: Sendable {
    let port: Int
    let tls: TLSConfiguration

    /// The gauges; a read that fails (a busy server may reset a new connection) is tried again.
    func read() async throws -> [String: Double] {
        var attempt = 0
        while true {
            attempt += 1
            do {
                return Self.gauges(try await SoakHost.httpsGet(port: port, path: "/metrics", tls: tls))
            } catch where attempt < 5 {
                try await Task.sleep(for: .seconds(1))
            }
        }
    }

    static func gauges(_ text: String) -> [String: Double] {
        var values: [String: Double] = [:]
        for line in text.split(separator: "\n") where line.hasPrefix("tandem_") {
            let parts = line.split(separator: " ")
            if parts.count == 2, let v = Double(parts[1]) { values[String(parts[0])] = v }
        }
        return values
    }
}
