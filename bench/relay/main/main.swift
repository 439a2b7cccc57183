// bench/relay: relayed packets per second per core through Tandem's real ICE (libnice), DTLS (OpenSSL)
// and SRTP (libsrtp2, AEAD_AES_128_GCM) path, next to a C floor (recv → unprotect → protect → send, one
// thread, the same profile) measured in the same run, alternating, because this machine's speed drifts.
//
//   swift build -c release --product tandem-bench-relay && .build/release/tandem-bench-relay [--pps N] [--seconds S] [--rounds R]
import CRelayFloor
import Glibc
import Synchronization
import TandemMedia
import TandemMediaCore
import TandemMediaTestSupport

struct Options {
    var pps = 20_000
    var seconds = 5.0
    var rounds = 3
    var size = 1200

    init(_ args: [String]) {
        var i = 1
        while i + 1 < args.count {
            switch args[i] {
            case "--pps": pps = Int(args[i + 1]) ?? pps
            case "--seconds": seconds = Double(args[i + 1]) ?? seconds
            case "--rounds": rounds = Int(args[i + 1]) ?? rounds
            case "--size": size = Int(args[i + 1]) ?? size
            default: break
            }
            i += 2
        }
    }
}

func now() -> Double { monotonicSeconds() }

func onLoop<T: Sendable>(_ loop: MediaLoop, _ body: @escaping @Sendable () -> T) -> T {
    try! runOnLoop(loop, body)
}

/// Paces `pps` packets from `client` with a 1 ms timer on its loop until `stop` is set.
final class Pacer: @unchecked Sendable {
    let client: RelayTestClient
    let pps: Int
    let size: Int
    let start = now()
    var due = 0.0
    let stop = Atomic<Bool>(false)

    init(client: RelayTestClient, pps: Int, size: Int) {
        self.client = client
        self.pps = pps
        self.size = size
    }

    func tick() {
        guard !stop.load(ordering: .relaxed) else { return }
        let target = (now() - start) * Double(pps)
        let count = Int(target - due)
        if count > 0 {
            client.sendVideo(count: count, size: size)
            due += Double(count)
        }
        client.loop.schedule(afterMs: 1) { [self] in tick() }
    }
}

let options = Options(CommandLine.arguments)
let relayIdentity = try DTLSIdentity.generate()
let relay = MediaRelay(configuration: RelayConfiguration(ice: ICEConfiguration(addresses: ["127.0.0.1"]), loops: 1), identity: relayIdentity)
let outputs = Mutex<[RelayOutput]>([])
let session = relay.open(session: "bench", epoch: 1) { output in outputs.withLock { $0.append(output) } }
let sender = try RelayTestClient(name: "a")
let receiver = try RelayTestClient(name: "b")
do {
    try connect([sender, receiver], to: session, relay: relay, outputs: outputs)
} catch {
    print("\(error)")
    exit(1)
}
let relayLoop = relay.loops[0]

struct Round {
    var pps: Double
    var cpuPerPacketUs: Double
    var loss: Double
}

func relayRound(_ o: Options) -> Round {
    let pacer = Pacer(client: sender, pps: o.pps, size: o.size)
    sender.loop.execute { pacer.tick() }
    usleep(500_000)  // warm-up
    let out0 = relay.counters.packetsOut.load(ordering: .relaxed)
    let sent0 = sender.sent.load(ordering: .relaxed)
    let got0 = receiver.received.load(ordering: .relaxed)
    let cpu0 = onLoop(relayLoop) { MediaLoop.threadCPUMicroseconds() }
    let t0 = now()
    usleep(UInt32(o.seconds * 1e6))
    let cpu1 = onLoop(relayLoop) { MediaLoop.threadCPUMicroseconds() }
    let t1 = now()
    let out1 = relay.counters.packetsOut.load(ordering: .relaxed)
    pacer.stop.store(true, ordering: .relaxed)
    usleep(300_000)
    let relayed = Double(out1 - out0)
    let sent = Double(sender.sent.load(ordering: .relaxed) - sent0)
    let got = Double(receiver.received.load(ordering: .relaxed) - got0)
    return Round(pps: relayed / (t1 - t0), cpuPerPacketUs: (cpu1 - cpu0) / max(1, relayed), loss: sent > 0 ? max(0, 1 - got / sent) : 1)
}

func floorRound(_ o: Options) -> Round {
    var result = tandem_floor_result()
    guard tandem_floor_run(Int32(o.pps), Int32(o.size), o.seconds, &result) == 0 else {
        print("the C floor could not run")
        exit(1)
    }
    return Round(
        pps: Double(result.relayed) / result.seconds, cpuPerPacketUs: result.relay_cpu_us / max(1, Double(result.relayed)),
        loss: result.relayed > 0 ? max(0, 1 - Double(result.received) / Double(result.relayed)) : 1)
}

extension String {
    func padded(_ width: Int) -> String { count >= width ? self : self + String(repeating: " ", count: width - count) }
}

func format(_ x: Double, _ digits: Int = 1) -> String {
    var s = String(Int((x * pow(10, Double(digits))).rounded()))
    if digits > 0 {
        while s.count <= digits { s = "0" + s }
        s.insert(".", at: s.index(s.endIndex, offsetBy: -digits))
    }
    return s
}

print("relay bench: \(options.size)-byte SRTP (AEAD_AES_128_GCM) packets at \(options.pps) pps offered, \(format(options.seconds)) s per round, \(options.rounds) rounds alternating")
print("round  path    relayed/s  cpu µs/pkt  pkts/s/core  loss%")
var floors: [Double] = []
var relays: [Double] = []
for round in 1...options.rounds {
    let f = floorRound(options)
    floors.append(f.cpuPerPacketUs)
    print("\(round)      C floor \(format(f.pps, 0).padded(10)) \(format(f.cpuPerPacketUs, 2).padded(11)) \(format(1e6 / f.cpuPerPacketUs, 0).padded(12)) \(format(f.loss * 100, 2))")
    let r = relayRound(options)
    relays.append(r.cpuPerPacketUs)
    print("\(round)      tandem  \(format(r.pps, 0).padded(10)) \(format(r.cpuPerPacketUs, 2).padded(11)) \(format(1e6 / r.cpuPerPacketUs, 0).padded(12)) \(format(r.loss * 100, 2))")
}
let floorMedian = floors.sorted()[floors.count / 2]
let relayMedian = relays.sorted()[relays.count / 2]
// A relayed 720p call: each way about 1.5 Mbit/s of video in 1200-byte packets (~156 pkt/s) and 50 Opus
// packets per second: about 412 relayed packets per second for the call, both directions.
let packetsPerCall = 2.0 * (1_500_000.0 / 8 / 1200 + 50)
print("median cpu µs/pkt: C floor \(format(floorMedian, 2)), tandem \(format(relayMedian, 2))")
print("tandem / C floor throughput per core: \(format(floorMedian / relayMedian, 2)) (target ≥ 0.80)")
print("720p call ≈ \(format(packetsPerCall, 0)) relayed pkt/s: \(format(packetsPerCall * relayMedian / 1e4, 2))% of a core per call, \(format(1e6 / (packetsPerCall * relayMedian), 0)) calls per core (target ≥ 150)")
session.close()
usleep(200_000)
exit(0)
