import Metrics
import TandemSTUN
import TandemTURN
import Synchronization

/// The TURN service's figures in `/metrics`. Shards count without locks and add their deltas here
/// once a second.
public final class TURNMetrics: Sendable {
    let allocations = Gauge(label: "tandem_turn_allocations")
    let permissions = Gauge(label: "tandem_turn_permissions")
    let channels = Gauge(label: "tandem_turn_channels")
    let created = Counter(label: "tandem_turn_allocations_created_total")
    let packetsToPeers = Counter(label: "tandem_turn_packets_total", dimensions: [("direction", "to_peer")])
    let packetsToClients = Counter(label: "tandem_turn_packets_total", dimensions: [("direction", "to_client")])
    let bytesToPeers = Counter(label: "tandem_turn_bytes_total", dimensions: [("direction", "to_peer")])
    let bytesToClients = Counter(label: "tandem_turn_bytes_total", dimensions: [("direction", "to_client")])
    let dropped = Counter(label: "tandem_turn_dropped_total")
    private let perShard = Mutex<[Int: (Int, Int, Int)]>([:])

    public init() {}

    func add(_ c: TURNCounters) {
        if c.allocationsCreated > 0 { created.increment(by: c.allocationsCreated) }
        if c.packetsToPeers > 0 { packetsToPeers.increment(by: c.packetsToPeers) }
        if c.bytesToPeers > 0 { bytesToPeers.increment(by: c.bytesToPeers) }
        if c.packetsToClients > 0 { packetsToClients.increment(by: c.packetsToClients) }
        if c.bytesToClients > 0 { bytesToClients.increment(by: c.bytesToClients) }
        if c.dropped > 0 { dropped.increment(by: c.dropped) }
        for (code, n) in c.errorsByCode where n > 0 {
            Counter(label: "tandem_turn_errors_total", dimensions: [("code", String(code))]).increment(by: n)
        }
    }

    func setGauges(shard: Int, allocations a: Int, permissions p: Int, channels ch: Int) {
        let totals = perShard.withLock { table in
            table[shard] = (a, p, ch)
            return table.values.reduce((0, 0, 0)) { ($0.0 + $1.0, $0.1 + $1.1, $0.2 + $1.2) }
        }
        allocations.record(totals.0)
        permissions.record(totals.1)
        channels.record(totals.2)
    }
}
