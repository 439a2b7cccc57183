import CHeap
import Prometheus
import Synchronization
import TandemMedia
import TandemMediaCore
import TandemProtocol
import TandemSFU

/// The server's Prometheus metrics. Counters for every known label value are made up front so the
/// per-message path does no registry look-up.
public final class ServerMetrics: Sendable {
    public let registry: PrometheusCollectorRegistry
    let connections: Gauge
    let sessions: Gauge
    let participants: Gauge
    /// LiveSession tasks running: one per session, until its mailbox is drained after the session ends.
    let sessionTasks: Gauge
    let messagesIn: [String: Counter]
    let messagesOut: [String: Counter]
    let errors: [ErrorCode: Counter]
    let switches: [SwitchReason: Counter]
    let joinLatency: DurationHistogram
    let healthReports: Counter
    let slowConsumers: Counter
    let sfuPreparations: [Bool: Counter]
    let sfuErrors: [SFUError.Code: Counter]
    let sfuDeletes: [Bool: Counter]

    static let clientTypes = ["join", "signal", "health", "ping", "leave", "invalid"]
    static let serverTypes = [
        "welcome", "peer-joined", "peer-state", "peer-left", "signal", "provider", "quality", "video", "alert", "pong", "error",
    ]

    public init(registry: PrometheusCollectorRegistry = PrometheusCollectorRegistry()) {
        self.registry = registry
        connections = registry.makeGauge(descriptor: Self.name("tandem_connections", "Open signaling sockets"))
        sessions = registry.makeGauge(descriptor: Self.name("tandem_sessions", "Sessions with at least one participant on this node"))
        participants = registry.makeGauge(descriptor: Self.name("tandem_participants", "Participants on this node, reconnecting included"))
        sessionTasks = registry.makeGauge(descriptor: Self.name("tandem_session_tasks", "Session tasks running on this node"))
        messagesIn = Dictionary(
            uniqueKeysWithValues: Self.clientTypes.map {
                ($0, registry.makeCounter(descriptor: Self.name("tandem_messages_in_total", "Client messages by type"), labels: [("type", $0)]))
            })
        messagesOut = Dictionary(
            uniqueKeysWithValues: Self.serverTypes.map {
                ($0, registry.makeCounter(descriptor: Self.name("tandem_messages_out_total", "Server messages by type"), labels: [("type", $0)]))
            })
        errors = Dictionary(
            uniqueKeysWithValues: ErrorCode.allCases.map {
                ($0, registry.makeCounter(descriptor: Self.name("tandem_errors_total", "Error messages sent, by code"), labels: [("code", $0.rawValue)]))
            })
        switches = Dictionary(
            uniqueKeysWithValues: SwitchReason.allCases.map {
                ($0, registry.makeCounter(descriptor: Self.name("tandem_switches_total", "Provider switches by reason"), labels: [("reason", $0.rawValue)]))
            })
        joinLatency = registry.makeDurationHistogram(
            descriptor: Self.name("tandem_join_duration_seconds", "From a join arriving to its welcome being queued"),
            buckets: [.microseconds(250), .milliseconds(1), .milliseconds(2), .milliseconds(5), .milliseconds(10), .milliseconds(25),
                      .milliseconds(50), .milliseconds(100), .milliseconds(250), .seconds(1)])
        healthReports = registry.makeCounter(descriptor: Self.name("tandem_health_reports_total", "Health reports received"))
        slowConsumers = registry.makeCounter(descriptor: Self.name("tandem_slow_consumers_total", "Sockets closed because they did not read"))
        let outcome = { (name: String, help: String, yes: String, no: String) -> [Bool: Counter] in
            [true: registry.makeCounter(descriptor: Self.name(name, help), labels: [("outcome", yes)]),
             false: registry.makeCounter(descriptor: Self.name(name, help), labels: [("outcome", no)])]
        }
        sfuPreparations = outcome("tandem_sfu_preparations_total", "Sessions' SFU rooms and tokens made, or failed", "ready", "failed")
        sfuDeletes = outcome("tandem_sfu_room_deletes_total", "SFU rooms deleted after their sessions ended", "deleted", "failed")
        sfuErrors = Dictionary(
            uniqueKeysWithValues: SFUError.Code.allCases.map {
                ($0, registry.makeCounter(descriptor: Self.name("tandem_sfu_errors_total", "Failed SFU service calls, by error"), labels: [("code", $0.rawValue)]))
            })
    }

    private static func name(_ full: String, _ help: String) -> MetricNameDescriptor {
        MetricNameDescriptor(metricName: full, unitName: "", helpText: help)
    }

    func countIn(_ type: String) { (messagesIn[type] ?? messagesIn["invalid"])?.increment() }
    func countOut(_ type: String) { messagesOut[type]?.increment() }
    func countError(_ code: ErrorCode) { errors[code]?.increment() }

    public func render() -> String { registry.emitToString() }
}

/// The media relay's counters in Prometheus text: read from its atomics at scrape time, so the packet
/// path never touches the registry.
func relayMetrics(_ relay: MediaRelay) -> String {
    let c = relay.counters
    func load(_ a: borrowing Atomic<Int>) -> Int { a.load(ordering: .relaxed) }
    let metrics: [(name: String, type: String, help: String, samples: [(labels: String, value: Int)])] = [
        ("tandem_relay_packets_total", "counter", "RTP packets through the media relay",
         [("{direction=\"in\"}", load(c.packetsIn)), ("{direction=\"out\"}", load(c.packetsOut))]),
        ("tandem_relay_bytes_total", "counter", "SRTP bytes through the media relay",
         [("{direction=\"in\"}", load(c.bytesIn)), ("{direction=\"out\"}", load(c.bytesOut))]),
        ("tandem_relay_dropped_total", "counter", "Packets the relay could not forward", [("", load(c.dropped))]),
        ("tandem_relay_legs", "gauge", "Relay legs open", [("", load(c.legsOpen))]),
        ("tandem_relay_legs_connected_total", "counter", "Relay legs that completed ICE and DTLS", [("", load(c.legsConnected))]),
        ("tandem_relay_legs_failed_total", "counter", "Relay legs that failed (ICE, DTLS or timeout)", [("", load(c.legsFailed))]),
        ("tandem_relay_keyframe_requests_total", "counter", "Keyframe requests (PLI/FIR) the relay forwarded or made",
         [("", load(c.keyframeRequests))]),
        ("tandem_relay_nacks_total", "counter", "Sequence numbers participants NACKed", [("", load(c.nacks))]),
        ("tandem_relay_retransmissions_total", "counter", "NACKed packets the relay re-sent from its own history",
         [("", load(c.retransmissions))]),
    ]
    var text = ""
    for metric in metrics {
        text += "# HELP \(metric.name) \(metric.help)\n# TYPE \(metric.name) \(metric.type)\n"
        for sample in metric.samples { text += "\(metric.name)\(sample.labels) \(sample.value)\n" }
    }
    return text
}

/// The C heap (where Swift's objects live) in Prometheus text: bytes in use, and free bytes the
/// allocator holds without giving them back; a leak grows the first, a past peak only the second.
func heapMetrics() -> String {
    var inUse = 0
    var free = 0
    tandem_heap_stats(&inUse, &free)
    return """
        # HELP tandem_heap_bytes The C heap: bytes in use, and free bytes held by the allocator
        # TYPE tandem_heap_bytes gauge
        tandem_heap_bytes{state="in_use"} \(inUse)
        tandem_heap_bytes{state="free"} \(free)

        """
}

/// After a load peak the allocator keeps what was freed; a container's memory limit counts it. Free
/// memory past `threshold` is given back (the hub's cleanup calls this once a minute).
func trimHeap(threshold: Int = 64 << 20) {
    var inUse = 0
    var free = 0
    tandem_heap_stats(&inUse, &free)
    if free > threshold { _ = tandem_heap_trim() }
}
