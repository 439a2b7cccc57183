import TandemMedia
import TandemProtocol

/// Every parser that reads bytes a network peer sends, as a function of those bytes. libFuzzer drives
/// them (`Tests/Fuzz/run.sh`), and the test suite replays the corpus they found through them.
public enum FuzzTarget: String, CaseIterable, Sendable {
    /// An SDP offer to the relay: parsed, answered, and renegotiated.
    case sdp
    /// An SRTCP payload after decryption, translated for the other leg.
    case rtcp
    /// An RTP packet after decryption, rewritten for the other leg.
    case rtp
    /// Datagrams to a DTLS server before and during its handshake (2-byte length prefixes).
    case dtls
    /// A signaling frame.
    case signal

    public func run(_ input: UnsafeRawBufferPointer) {
        switch self {
        case .sdp: Self.sdp(input)
        case .rtcp: Self.rtcp(input)
        case .rtp: Self.rtp(input)
        case .dtls: Self.dtls(input)
        case .signal: _ = try? ClientMessage.decode(Array(input))
        }
    }

    static let local = SDPLocalEndpoint(
        iceUfrag: "fuzz", icePwd: "fuzzfuzzfuzzfuzzfuzzfuzz", fingerprint: Fingerprint(algorithm: "sha-256", digest: Array(0..<32)),
        candidates: ["candidate:1 1 UDP 2015363327 192.0.2.1 40000 typ host"], cname: "fuzz", streamID: "fuzz", audioSSRC: 1, videoSSRC: 2,
        sessionID: 1, sessionVersion: 1)

    static func sdp(_ input: UnsafeRawBufferPointer) {
        guard let offer = try? SessionDescription.parse(String(decoding: input, as: UTF8.self)) else { return }
        guard let answer = try? offer.answer(local) else { return }
        let reoffer = offer.reoffer(negotiated: answer.media, adding: [.audio, .video], local: local)
        // The relay's own offer must always be SDP it can read back.
        guard let again = try? SessionDescription.parse(reoffer.sdp) else { fatalError("the relay's offer does not parse:\n\(reoffer.sdp)") }
        _ = again.accepted(reoffer.added)
        let ice = ICEConfiguration(addresses: [], announced: ["203.0.113.1"], allowLoopbackCandidates: false)
        for candidate in offer.candidates {
            _ = ice.advertised(candidate)
            if let address = candidate.split(separator: " ").dropFirst(4).first { _ = ice.acceptsRemote(address: String(address)) }
        }
    }

    static let translation = RTCPTranslation(
        senders: [SSRCMapping(from: 0x1111, to: 0xA, seqDelta: 7, tsDelta: 900), SSRCMapping(from: 0x2222, to: 0xB)],
        media: [SSRCMapping(from: 0xA0, to: 0x3333, seqDelta: 65_000, tsDelta: 1), SSRCMapping(from: 0xB0, to: 0x4444)])

    static func rtcp(_ input: UnsafeRawBufferPointer) {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: max(1, input.count), alignment: 16)
        defer { buffer.deallocate() }
        buffer.copyMemory(from: input)
        var summary = RTCPSummary()
        let length = RTCP.translate(buffer, length: input.count, translation, summary: &summary) { _, seq in seq % 3 == 0 }
        precondition(length <= input.count)
        if length > 0, !RTCP.isWellFormed(UnsafeRawBufferPointer(buffer), length: length), buffer[1] != 201 {
            fatalError("translated RTCP is not well formed")
        }
    }

    static func rtp(_ input: UnsafeRawBufferPointer) {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: max(1, input.count), alignment: 16)
        defer { buffer.deallocate() }
        buffer.copyMemory(from: input)
        var stream = OutgoingRTPStream(ssrc: 9, payloadType: 96, clockRate: 90_000, extensions: [(1, 3), (2, 14), (5, 1)])
        for round in 0..<3 {
            _ = stream.rewrite(buffer, length: input.count, nowMs: Int64(round) * 20)
            if round == 1 { stream.reconfigure(payloadType: 100, extensions: [(3, 2)]) }
        }
    }

    static let identity = try! DTLSIdentity.generate(commonName: "fuzz")

    static func dtls(_ input: UnsafeRawBufferPointer) {
        guard let server = try? DTLSTransport(identity: identity, role: .server, remoteFingerprint: identity.fingerprint) else { return }
        var offset = 0
        while offset + 2 <= input.count {
            let length = Int(input[offset]) << 8 | Int(input[offset + 1])
            let end = min(input.count, offset + 2 + length)
            _ = server.receive(UnsafeRawBufferPointer(rebasing: input[(offset + 2)..<end]))
            _ = server.takeOutgoing()
            _ = server.handleTimeout()
            offset = end
        }
        server.close()
    }
}
