import Metrics
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

    func add(created c: Int, packetsToPeers pp: Int, bytesToPeers bp: Int, packetsToClients pc: Int, bytesToClients bc: Int,
        dropped d: Int, errors: [Int: Int])
    {
        if c > 0 { created.increment(by: c) }
        if pp > 0 { packetsToPeers.increment(by: pp) }
        if bp > 0 { bytesToPeers.increment(by: bp) }
        if pc > 0 { packetsToClients.increment(by: pc) }
        if bc > 0 { bytesToClients.increment(by: bc) }
        if d > 0 { dropped.increment(by: d) }
        for (code, n) in errors where n > 0 {
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
