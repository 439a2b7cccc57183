import Glibc
import Synchronization
import TandemMedia
import TandemMediaCore

/// A minimal WebRTC endpoint for driving the relay in-process (tests and bench/relay): its own libnice
/// agent (controlling), DTLS client and SRTP, on its own loop. It offers one Opus and one VP8 section.
public final class RelayTestClient: ICEAgentDelegate, @unchecked Sendable {
    public let name: String
    public let loop: MediaLoop
    public let identity: DTLSIdentity
    public static let audioSSRC: UInt32 = 1111
    public static let videoSSRC: UInt32 = 2222

    private var agent: ICEAgent!
    private var dtls: DTLSTransport?
    private var srtpOut: SRTPSession?
    private var srtpIn: SRTPSession?
    private var seq: UInt16 = 0
    private var timestamp: UInt32 = 0
    private let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 2048, alignment: 16)

    public let connected = Atomic<Bool>(false)
    public let received = Atomic<Int>(0)
    public let sent = Atomic<Int>(0)
    /// With `keep`, every RTP/RTCP datagram received, as it arrived (encrypted) and decrypted.
    public let keep: Bool
    public let packets = Mutex<[(raw: [UInt8], plain: [UInt8], rtcp: Bool)]>([])

    public init(name: String, keep: Bool = false) throws {
        self.name = name
        self.keep = keep
        identity = try DTLSIdentity.generate(commonName: name)
        loop = MediaLoop(name: "client-\(name)")
    }

    deinit { buffer.deallocate() }

    /// Makes the agent and gathers on 127.0.0.1 (host candidates come at once); returns the offer. On the loop.
    public func offer() throws -> String {
        agent = try ICEAgent(loop: loop, configuration: ICEConfiguration(addresses: ["127.0.0.1"]), controlling: true, delegate: self)
        let (candidates, _) = try agent.start()
        let transport =
            "a=ice-ufrag:\(agent.localUfrag)\r\na=ice-pwd:\(agent.localPassword)\r\na=fingerprint:\(identity.fingerprint)\r\n"
            + "a=setup:active\r\na=sendrecv\r\na=rtcp-mux\r\n" + candidates.map { "a=\($0)\r\n" }.joined() + "a=end-of-candidates\r\n"
        return "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n"
            + "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\n" + transport
            + "a=rtpmap:111 opus/48000/2\r\na=ssrc:\(Self.audioSSRC) cname:\(name)\r\n"
            + "m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\n" + transport
            + "a=rtpmap:96 VP8/90000\r\na=rtcp-fb:96 nack\r\na=rtcp-fb:96 nack pli\r\na=ssrc:\(Self.videoSSRC) cname:\(name)\r\n"
    }

    /// Takes the relay's answer. On the loop.
    public func answer(_ sdp: String, relayFingerprint: Fingerprint) throws {
        let answer = try SessionDescription.parse(sdp)
        _ = agent.setRemoteCredentials(ufrag: answer.iceUfrag, password: answer.icePwd)
        for candidate in answer.candidates { agent.addRemoteCandidate(candidate) }
        agent.remoteGatheringDone()
        dtls = try DTLSTransport(identity: identity, role: .client, remoteFingerprint: relayFingerprint)
    }

    public func ice(gathered candidate: String) {}
    public func iceGatheringDone() {}

    public func ice(state: ICEState) {
        guard state == .connected, let dtls, srtpOut == nil else { return }
        _ = dtls.start()
        flush()
    }

    public func ice(received datagram: UnsafeMutableRawBufferPointer) {
        guard datagram.count > 1 else { return }
        let kind = PacketClass.of(datagram[0], datagram[1])
        if kind == .dtls {
            guard let dtls else { return }
            if case .connected(let local, let remote)? = dtls.receive(UnsafeRawBufferPointer(datagram)) {
                srtpOut = try? SRTPSession(local, direction: .outbound)
                srtpIn = try? SRTPSession(remote, direction: .inbound)
                connected.store(true, ordering: .releasing)
            }
            flush()
            return
        }
        guard kind == .rtp || kind == .rtcp else { return }
        let rtcp = kind == .rtcp
        // Kept before counted: a reader that saw the count finds the packets.
        if keep, let srtpIn {
            let raw = Array(datagram)
            let plain = (try? srtpIn.unprotect(raw, rtcp: rtcp)) ?? []
            packets.withLock { $0.append((raw, plain, rtcp)) }
        }
        if !rtcp { received.add(1, ordering: .releasing) }
    }

    private func flush() {
        for d in dtls?.takeOutgoing() ?? [] { d.withUnsafeBytes { _ = agent.send($0.baseAddress!, count: $0.count) } }
    }

    /// Sends `count` video packets of `size` bytes on the wire. On the loop.
    public func sendVideo(count: Int, size: Int, ssrc: UInt32 = RelayTestClient.videoSSRC) {
        guard let srtpOut else { return }
        for _ in 0..<count {
            buffer.initializeMemory(as: UInt8.self, repeating: 0xAB)
            buffer[0] = 0x80
            buffer[1] = 96
            buffer.storeBytes(of: seq.bigEndian, toByteOffset: 2, as: UInt16.self)
            buffer.storeBytes(of: timestamp.bigEndian, toByteOffset: 4, as: UInt32.self)
            buffer.storeBytes(of: ssrc.bigEndian, toByteOffset: 8, as: UInt32.self)
            seq &+= 1
            timestamp &+= 3000
            guard let n = try? srtpOut.protect(buffer.baseAddress!, length: max(12, size - 16)) else { continue }
            if agent.send(buffer.baseAddress!, count: n) { sent.add(1, ordering: .relaxed) }
        }
    }

    /// Protects and sends one plain RTCP compound packet. On the loop.
    public func sendRTCP(_ packet: [UInt8]) {
        guard let srtpOut, let protected = try? srtpOut.protect(packet, rtcp: true) else { return }
        protected.withUnsafeBytes { _ = agent.send($0.baseAddress!, count: $0.count) }
    }

    /// Closes the agent on its loop, then stops the loop.
    public func close() {
        loop.execute { [self] in agent?.close() }
        loop.shutdown()
    }
}

/// Runs `body` on `loop` and blocks until it returns (for setup code outside async contexts).
public func runOnLoop<T: Sendable>(_ loop: MediaLoop, _ body: @escaping @Sendable () throws -> T) throws -> T {
    let result = Mutex<Result<T, any Error>?>(nil)
    loop.execute { result.withLock { $0 = Result { try body() } } }
    while true {
        if let r = result.withLock({ $0 }) { return try r.get() }
        usleep(1_000)
    }
}

/// Connects `clients` to `session`'s relay: offers, answers, waits for both sides. Throws after `seconds`.
public func connect(_ clients: [RelayTestClient], to session: RelaySessionHandle, relay: MediaRelay, outputs: borrowing Mutex<[RelayOutput]>, seconds: Double = 15) throws {
    for client in clients {
        let offer = try runOnLoop(client.loop) { try client.offer() }
        session.signal(from: client.name, .offer(sdp: offer))
        var sdp: String?
        try waitUntil(seconds, "the relay's answer to \(client.name)") {
            sdp = outputs.withLock { list in
                list.lazy.compactMap { if case let .answer(p, _, s) = $0, p == client.name { s } else { nil } }.first
            }
            return sdp != nil
        }
        let answer = sdp!
        try runOnLoop(client.loop) { try client.answer(answer, relayFingerprint: relay.identity.fingerprint) }
    }
    try waitUntil(seconds, "the legs connected") {
        clients.allSatisfy { $0.connected.load(ordering: .acquiring) }
            && outputs.withLock { $0.filter { if case .media(_, _, true, _) = $0 { true } else { false } }.count } >= clients.count
    }
}

public struct Timeout: Error, CustomStringConvertible {
    public let description: String
}

public func monotonicSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

/// Polls `condition` every 5 ms; throws `Timeout` after `seconds`.
public func waitUntil(_ seconds: Double, _ what: String, _ condition: () -> Bool) throws {
    let end = monotonicSeconds() + seconds
    while !condition() {
        if monotonicSeconds() > end { throw Timeout(description: "timed out waiting for \(what)") }
        usleep(5_000)
    }
}
