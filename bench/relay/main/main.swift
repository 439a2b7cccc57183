// bench/relay: relayed packets per second per core through Tandem's real ICE (libnice), DTLS (OpenSSL)
// and SRTP (libsrtp2, AEAD_AES_128_GCM) path, next to a C floor (recv → unprotect → protect → send, one
// thread, the same profile) measured in the same run, alternating, because this machine's speed drifts.
//
//   swift build -c release --product tandem-bench-relay && .build/release/tandem-bench-relay [--pps N] [--seconds S] [--rounds R]
import CRelayFloor
import Glibc
import Synchronization
import TandemMedia

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

/// A WebRTC-like client of the relay: its own libnice agent, DTLS client and SRTP, on its own loop.
final class Client: ICEAgentDelegate, @unchecked Sendable {
    let name: String
    let loop: MediaLoop
    let identity: DTLSIdentity
    var agent: ICEAgent!
    var dtls: DTLSTransport?
    var srtpOut: SRTPSession?
    var candidates: [String] = []
    let connected = Atomic<Bool>(false)
    let received = Atomic<Int>(0)
    let sent = Atomic<Int>(0)
    private var seq: UInt16 = 0
    private var timestamp: UInt32 = 0
    private let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 2048, alignment: 16)

    init(name: String, identity: DTLSIdentity) {
        self.name = name
        self.identity = identity
        loop = MediaLoop(name: "bench-\(name)")
    }

    /// Makes the agent and gathers (host candidates come at once), then returns the offer.
    func offer() -> String {
        agent = try! ICEAgent(loop: loop, configuration: ICEConfiguration(addresses: ["127.0.0.1"]), controlling: true, delegate: self)
        try! agent.start()
        let transport = """
            a=ice-ufrag:\(agent.localUfrag)\r
            a=ice-pwd:\(agent.localPassword)\r
            a=fingerprint:\(identity.fingerprint)\r
            a=setup:active\r
            a=sendrecv\r
            a=rtcp-mux\r
            \(candidates.map { "a=" + $0 + "\r\n" }.joined())a=end-of-candidates\r

            """
        return "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n"
            + "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\n" + transport
            + "a=rtpmap:111 opus/48000/2\r\na=ssrc:1111 cname:\(name)\r\n"
            + "m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\n" + transport
            + "a=rtpmap:96 VP8/90000\r\na=rtcp-fb:96 nack\r\na=rtcp-fb:96 nack pli\r\na=ssrc:2222 cname:\(name)\r\n"
    }

    func answer(_ sdp: String, relayFingerprint: Fingerprint) {
        let answer = try! SessionDescription.parse(sdp)
        _ = agent.setRemoteCredentials(ufrag: answer.iceUfrag, password: answer.icePwd)
        for candidate in answer.candidates { agent.addRemoteCandidate(candidate) }
        agent.remoteGatheringDone()
        dtls = try! DTLSTransport(identity: identity, role: .client, remoteFingerprint: relayFingerprint)
    }

    func ice(gathered candidate: String) { candidates.append(candidate) }
    func iceGatheringDone() {}

    func ice(state: ICEState) {
        guard state == .connected, let dtls, srtpOut == nil else { return }
        _ = dtls.start()
        flush()
    }

    func ice(received datagram: UnsafeMutableRawBufferPointer) {
        guard datagram.count > 1 else { return }
        if datagram[0] >= 20 && datagram[0] <= 63 {
            guard let dtls else { return }
            if case .connected(let local, _)? = dtls.receive(UnsafeRawBufferPointer(datagram)) {
                srtpOut = try! SRTPSession(local, direction: .outbound)
                connected.store(true, ordering: .releasing)
            }
            flush()
        } else if datagram[0] >= 128, !(192...223).contains(datagram[1]) {
            received.add(1, ordering: .relaxed)
        }
    }

    private func flush() {
        for d in dtls?.takeOutgoing() ?? [] { d.withUnsafeBytes { _ = agent.send($0.baseAddress!, count: $0.count) } }
    }

    /// Sends `count` video packets of `size` bytes on the wire (on the loop thread).
    func send(count: Int, size: Int) {
        guard let srtpOut else { return }
        for _ in 0..<count {
            let plain = size - 16
            buffer.initializeMemory(as: UInt8.self, repeating: 0xAB)
            buffer[0] = 0x80
            buffer[1] = 96
            buffer.storeBytes(of: seq.bigEndian, toByteOffset: 2, as: UInt16.self)
            buffer.storeBytes(of: timestamp.bigEndian, toByteOffset: 4, as: UInt32.self)
            buffer.storeBytes(of: UInt32(2222).bigEndian, toByteOffset: 8, as: UInt32.self)
            seq &+= 1
            timestamp &+= 3000
            guard let n = try? srtpOut.protect(buffer.baseAddress!, length: plain) else { continue }
            if agent.send(buffer.baseAddress!, count: n) { sent.add(1, ordering: .relaxed) }
        }
    }
}

func now() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

func waitUntil(_ seconds: Double, _ what: String, _ condition: () -> Bool) {
    let end = now() + seconds
    while !condition() {
        if now() > end {
            print("timed out waiting for \(what)")
            exit(1)
        }
        usleep(5_000)
    }
}

func onLoop<T: Sendable>(_ loop: MediaLoop, _ body: @escaping @Sendable () -> T) -> T {
    let result = Mutex<T?>(nil)
    loop.execute { result.withLock { $0 = body() } }
    var out: T?
    waitUntil(10, "the loop") {
        out = result.withLock { $0 }
        return out != nil
    }
    return out!
}

/// Paces `pps` packets from `client` with a 1 ms timer on its loop until `stop` is set.
final class Pacer: @unchecked Sendable {
    let client: Client
    let pps: Int
    let size: Int
    let start = now()
    var due = 0.0
    let stop = Atomic<Bool>(false)

    init(client: Client, pps: Int, size: Int) {
        self.client = client
        self.pps = pps
        self.size = size
    }

    func tick() {
        guard !stop.load(ordering: .relaxed) else { return }
        let target = (now() - start) * Double(pps)
        let count = Int(target - due)
        if count > 0 {
            client.send(count: count, size: size)
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
let sender = Client(name: "a", identity: try DTLSIdentity.generate())
let receiver = Client(name: "b", identity: try DTLSIdentity.generate())

for client in [sender, receiver] {
    let offer = onLoop(client.loop) { client.offer() }
    session.signal(from: client.name, .offer(sdp: offer))
    var sdp: String?
    waitUntil(10, "the relay's answer to \(client.name)") {
        sdp = outputs.withLock { list in
            list.lazy.compactMap { if case let .answer(p, _, s) = $0, p == client.name { s } else { nil } }.first
        }
        return sdp != nil
    }
    _ = onLoop(client.loop) { [sdp] in client.answer(sdp!, relayFingerprint: relayIdentity.fingerprint) }
}
waitUntil(15, "both legs connected") {
    sender.connected.load(ordering: .acquiring) && receiver.connected.load(ordering: .acquiring)
        && outputs.withLock { $0.filter { if case .media(_, _, true, _) = $0 { true } else { false } }.count } == 2
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
