import TandemMediaCore
import TandemProtocol
import TandemSTUN
import TandemTURN

/// Every parser that reads bytes a network peer sends, as a function of those bytes, but DTLS's
/// (`DTLSFuzzTarget`, which needs OpenSSL): this module links no C library. libFuzzer drives them
/// (`Tests/Fuzz/run.sh`), and the test suite replays the corpus they found through them.
public enum FuzzTarget: String, CaseIterable, Sendable {
    /// An SDP offer to the relay: parsed, answered, and renegotiated.
    case sdp
    /// An SRTCP payload after decryption, translated for the other leg.
    case rtcp
    /// An RTP packet after decryption, rewritten for the other leg.
    case rtp
    /// A signaling frame.
    case signal
    /// A JSON text: parsed, written back and parsed again to the same value.
    case json
    /// A conversation with the TURN server from three clients: STUN messages as sent, messages the
    /// target signs with a valid credential (so that the fuzzer reaches what follows authentication),
    /// ChannelData, and data from peers.
    case turn

    public func run(_ input: UnsafeRawBufferPointer) {
        switch self {
        case .sdp: Self.sdp(input)
        case .rtcp: Self.rtcp(input)
        case .rtp: Self.rtp(input)
        case .signal: _ = try? ClientMessage.decode(Array(input))
        case .json: Self.json(input)
        case .turn: Self.turn(input)
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

    static func json(_ input: UnsafeRawBufferPointer) {
        guard let value = try? JSONParser.parse(Array(input)) else { return }
        guard let again = try? JSONParser.parse(value.encoded), again == value else { fatalError("JSON does not survive a round trip") }
    }

    static let turnSecret = "fuzz-turn-secret-0123"

    /// Chunks of `[flags][length: 2][bytes]`: flags' low bits pick the client (of three) and the kind of
    /// chunk (raw, signed request of a method, ChannelData, peer data, a tick).
    static func turn(_ input: UnsafeRawBufferPointer) {
        var policy = TURNPolicy()
        policy.secrets = [turnSecret]
        policy.relayIPv4 = IPAddress("192.0.2.10")
        policy.relayIPv6 = IPAddress("2001:db8::10")
        policy.peerFilter = PeerFilter(allow: [IPPrefix("127.0.0.0/8")!], own: [IPAddress("192.0.2.10")!], relayPorts: 50000...50009)
        policy.unauthenticatedAnswersPerSource = 5
        var time = TURNInstant(monotonic: 1000, unix: 1_800_000_000)
        var server = TURNMachine(
            policy: policy, resources: AllocationResources(.init(ports: 50000...50009, perIdentity: 4)), nonceKey: Array(0..<32), now: time)
        var nonces = ["", "", ""]
        var allocations: [AllocationID] = []
        func perform(_ actions: [TURNMachine.Action]) {
            for action in actions {
                switch action {
                case .reply(let bytes, let client):
                    guard let reply = try? STUNMessage(parsing: bytes) else { fatalError("a reply that is not STUN") }
                    if let nonce = reply.string(STUNAttribute.nonce) { nonces[Int(client.endpoint) % 3] = nonce }
                case .openRelay(let id, _):
                    allocations.append(id)
                    perform(id % 5 == 4 ? server.relayFailed(id) : server.relayOpened(id))
                case .closeRelay, .sendToPeer:
                    break
                }
            }
        }
        var offset = 0
        var chunks = 0
        // A conversation of 64 messages reaches every state; past that an input only repeats the costly
        // part (each signed request is four HMACs) and slows the fuzzer down.
        while offset + 3 <= input.count, chunks < 64 {
            chunks += 1
            let flags = input[offset]
            let length = Int(input[offset + 1]) << 8 | Int(input[offset + 2])
            let end = min(input.count, offset + 3 + length)
            let body = Array(input[(offset + 3)..<end])
            offset = end
            let who = Int(flags % 3)
            let client = ClientID(remote: TransportAddress(ip: IPAddress(v4: 0x7F00_0001 + UInt32(who)), port: 40000), endpoint: UInt32(who))
            switch (flags >> 2) % 5 {
            case 0:
                perform(server.receive(body, from: client))
            case 1:
                perform(server.receive(signed(body, method: flags >> 5, nonce: nonces[who]), from: client))
            case 2:
                _ = server.routeChannelData(UInt16(truncatingIfNeeded: flags) << 8 | 0x4000, length: body.count, from: client)
            case 3:
                guard let id = allocations.last, body.count >= 2 else { continue }
                let peer = TransportAddress(ip: IPAddress(v4: 0x7F00_0001 + UInt32(body[0] % 4)), port: 40000 + UInt16(body[1]))
                _ = server.routePeerData(to: id, from: peer, length: body.count)
            default:
                time.monotonic += Double(length % 700)
                time.unix += Int64(length % 700)
                perform(server.tick(time))
            }
        }
    }

    /// A request whose attributes are `body` (as type, length, value), signed with a valid credential.
    static func signed(_ body: [UInt8], method: UInt8, nonce: String) -> [UInt8] {
        let methods: [STUNMethod] = [.allocate, .refresh, .createPermission, .channelBind, .binding, .allocate, .refresh, .createPermission]
        var b = STUNMessageBuilder(method: methods[Int(method) % methods.count], class: .request, transactionID: .random())
        var i = 0
        while i + 4 <= body.count {
            let type = UInt16(body[i]) << 8 | UInt16(body[i + 1])
            let length = min(Int(body[i + 2]) << 8 | Int(body[i + 3]), body.count - i - 4)
            b.append(type, body[(i + 4)..<(i + 4 + length)])
            i += 4 + length
        }
        b.append(STUNAttribute.username, string: credential.username)
        b.append(STUNAttribute.realm, string: "tandem")
        b.append(STUNAttribute.nonce, string: nonce)
        b.appendIntegrity(key: credential.key)
        return b.bytes
    }

    /// One valid credential for every signed request (minting it per request doubled the cost of one).
    static let credential: (username: String, key: [UInt8]) = {
        let (username, password) = TURNCredentials.mint(secret: turnSecret, identity: "fuzz", expiry: 1_800_000_000 + 3600)
        return (username, TURNCredentials.longTermKey(username: username, realm: "tandem", password: password, algorithm: .md5))
    }()
}
