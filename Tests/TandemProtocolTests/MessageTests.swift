import Testing

@testable import TandemProtocol

@Suite struct ClientMessageTests {
    func decode(_ text: String) throws(ProtocolError) -> ClientMessage { try ClientMessage.decode(Array(text.utf8)) }

    @Test func decodesJoin() throws {
        let m = try decode(
            #"{"type":"join","session":"room-1_A","token":"t","name":"Ann","providers":["p2p","sfu"],"device":{"os":"x"},"resume":{"participant":"p1","key":"k","lastSeq":7},"extra":1}"#
        )
        guard case .join(let j) = m else { Issue.record("not a join"); return }
        #expect(j.session.rawValue == "room-1_A")
        #expect(j.token == "t")
        #expect(j.name == "Ann")
        #expect(j.providers == [.p2p, .sfu])
        #expect(j.device.map { String(decoding: $0, as: UTF8.self) } == #"{"os":"x"}"#)
        #expect(j.resume == ResumeRequest(participant: ParticipantID("p1"), key: "k", lastSeq: 7))
    }

    @Test func decodesSignalVerbatim() throws {
        let data = #"{ "kind":"offer","epoch":3,"sdp":"v=0\r\n", "extra": [1,2] }"#
        guard case .signal(let s) = try decode(#"{"type":"signal","to":"p2","data":"# + data + "}") else {
            Issue.record("not a signal")
            return
        }
        #expect(s.to == ParticipantID("p2"))
        #expect(s.kind == .offer)
        #expect(s.epoch == 3)
        #expect(String(decoding: s.rawData, as: UTF8.self) == data)
    }

    @Test func decodesHealthAndPing() throws {
        let h = try decode(
            #"{"type":"health","epoch":2,"provider":"p2p","media":"connected","rttMs":120.5,"lossPct":1,"jitterMs":8,"bitrateKbps":900,"frameHeight":480,"candidateType":"srflx"}"#
        )
        #expect(
            h
                == .health(
                    HealthReport(
                        epoch: 2, provider: .p2p, media: .connected, rttMs: 120.5, lossPct: 1, jitterMs: 8, bitrateKbps: 900, frameHeight: 480,
                        candidateType: .srflx)))
        #expect(try decode(#"{"type":"ping","t":12.50}"#) == .ping(t: Array("12.50".utf8)))
        #expect(try decode(#"{"type":"leave"}"#) == .leave)
    }

    @Test(arguments: [
        ("not json", ErrorCode.badMessage, nil as String?),
        ("[]", .badMessage, nil),
        (#"{"type":5}"#, .badMessage, nil),
        (#"{"type":"dance"}"#, .unknownType, "dance"),
        (#"{"type":"join"}"#, .badMessage, "join"),
        (#"{"type":"join","session":""}"#, .badMessage, "join"),
        (#"{"type":"join","session":"a b"}"#, .badMessage, "join"),
        (#"{"type":"join","session":"\#(String(repeating: "a", count: 129))"}"#, .badMessage, "join"),
        (#"{"type":"join","session":"s","providers":[]}"#, .badMessage, "join"),
        (#"{"type":"join","session":"s","providers":["carrier-pigeon"]}"#, .badMessage, "join"),
        (#"{"type":"join","session":"s","device":"phone"}"#, .badMessage, "join"),
        (#"{"type":"join","session":"s","device":{"x":"\#(String(repeating: "a", count: 1100))"}}"#, .tooLarge, "join"),
        (#"{"type":"join","session":"s","resume":{"participant":"p"}}"#, .badMessage, "join"),
        (#"{"type":"join","session":"s","name":7}"#, .badMessage, "join"),
        (#"{"type":"signal","data":{"kind":"offer","epoch":1,"sdp":"x"}}"#, .badMessage, "signal"),
        (#"{"type":"signal","to":"p","data":"x"}"#, .badMessage, "signal"),
        (#"{"type":"signal","to":"p","data":{"kind":"hug","epoch":1}}"#, .badMessage, "signal"),
        (#"{"type":"signal","to":"p","data":{"kind":"offer","epoch":1}}"#, .badMessage, "signal"),
        (#"{"type":"signal","to":"p","data":{"kind":"candidate","epoch":1}}"#, .badMessage, "signal"),
        (#"{"type":"signal","to":"p","data":{"kind":"restart","epoch":-1}}"#, .badMessage, "signal"),
        (#"{"type":"signal","to":"p","data":{"kind":"restart","epoch":1.5}}"#, .badMessage, "signal"),
        (#"{"type":"health","epoch":1,"provider":"p2p"}"#, .badMessage, "health"),
        (#"{"type":"health","epoch":1,"provider":"xyz","media":"new"}"#, .badMessage, "health"),
        (#"{"type":"health","epoch":1,"provider":"p2p","media":"new","rttMs":-1}"#, .badMessage, "health"),
        (#"{"type":"health","epoch":1,"provider":"p2p","media":"new","lossPct":101}"#, .badMessage, "health"),
        (#"{"type":"health","epoch":1,"provider":"p2p","media":"new","rttMs":"fast"}"#, .badMessage, "health"),
        (#"{"type":"health","epoch":1,"provider":"p2p","media":"new","candidateType":"tunnel"}"#, .badMessage, "health"),
        (#"{"type":"ping"}"#, .badMessage, "ping"),
        (#"{"type":"ping","t":"now"}"#, .badMessage, "ping"),
    ])
    func rejects(text: String, code: ErrorCode, ref: String?) {
        do {
            _ = try decode(text)
            Issue.record("accepted \(text)")
        } catch {
            #expect(error.code == code, "\(text)")
            #expect(error.ref == ref, "\(text)")
        }
    }

    @Test func sessionIDs() {
        #expect(SessionID("a") != nil)
        #expect(SessionID(String(repeating: "Z9_-", count: 32)) != nil)
        #expect(SessionID("") == nil)
        #expect(SessionID(String(repeating: "a", count: 129)) == nil)
        #expect(SessionID("é") == nil)
        #expect(SessionID("a/b") == nil)
    }
}

@Suite struct ServerMessageTests {
    func parse(_ m: ServerMessage, seq: Int = 4) throws -> JSON { try JSONParser.parse(m.encoded(seq: seq)) }

    @Test func welcomeCarriesEveryField() throws {
        let provider = ProviderInfo(
            name: .p2p, epoch: 2, room: SessionID("s1")!, polite: true,
            iceServers: [ICEServer(urls: ["stun:127.0.0.1:3478"]), ICEServer(urls: ["turn:h"], username: "u", credential: "c")])
        let j = try parse(
            .welcome(
                session: SessionID("s1")!, participant: ParticipantID("p1"), resumeKey: "k", peers: [PeerInfo(id: ParticipantID("p0"), name: nil)],
                provider: provider, heartbeatIntervalMs: 5000, heartbeatTimeoutMs: 15000, serverVersion: "1", node: "n", resumed: false), seq: 1)
        #expect(j["seq"] == .number(1))
        #expect(j["type"] == .string("welcome"))
        #expect(j["session"] == .string("s1"))
        #expect(j["participant"] == .string("p1"))
        #expect(j["resumeKey"] == .string("k"))
        #expect(j["peers"] == .array([.object(["id": .string("p0"), "name": .null])]))
        #expect(j["provider"]?["name"] == .string("p2p"))
        #expect(j["provider"]?["epoch"] == .number(2))
        #expect(j["provider"]?["room"] == .string("s1"))
        #expect(j["provider"]?["polite"] == .bool(true))
        #expect(j["provider"]?["iceServers"] == .array([
            .object(["urls": .array([.string("stun:127.0.0.1:3478")])]),
            .object(["urls": .array([.string("turn:h")]), "username": .string("u"), "credential": .string("c")]),
        ]))
        #expect(j["heartbeat"] == .object(["intervalMs": .number(5000), "timeoutMs": .number(15000)]))
        #expect(j["server"] == .object(["version": .string("1"), "node": .string("n")]))
    }

    @Test func everyTypeEncodesItsFields() throws {
        let info = ProviderInfo(name: .sfu, epoch: 3, room: SessionID("r")!, polite: true, sfu: SFUAccess(provider: "daily", url: "https://x", token: "t"))
        let cases: [(ServerMessage, [String: JSON])] = [
            (.peerJoined(PeerInfo(id: ParticipantID("a"), name: "A")), ["peer": .object(["id": .string("a"), "name": .string("A")])]),
            (.peerState(peer: ParticipantID("a"), state: .reconnecting), ["peer": .string("a"), "state": .string("reconnecting")]),
            (.peerLeft(peer: ParticipantID("a"), reason: .timeout), ["peer": .string("a"), "reason": .string("timeout")]),
            (.signal(from: ParticipantID("a"), rawData: Array(#"{"kind":"offer"}"#.utf8)), ["from": .string("a"), "data": .object(["kind": .string("offer")])]),
            (.provider(info, reason: .quality, previous: .p2p), [
                "name": .string("sfu"), "epoch": .number(3), "room": .string("r"), "reason": .string("quality"), "previous": .string("p2p"),
                "sfu": .object(["provider": .string("daily"), "url": .string("https://x"), "token": .string("t")]),
            ]),
            (.quality(participant: ParticipantID("a"), score: 55, level: .poor), ["participant": .string("a"), "score": .number(55), "level": .string("poor")]),
            (.video(maxHeight: 360, reason: "bandwidth"), ["maxHeight": .number(360), "reason": .string("bandwidth")]),
            (.alert(kind: .packetLoss, participant: ParticipantID("a"), value: 12.5), ["kind": .string("packet_loss"), "participant": .string("a"), "value": .number(12.5)]),
            (.pong(t: Array("1.50".utf8)), ["t": .number(1.5)]),
            (.error(ProtocolError(.staleEpoch, "old", ref: "signal")), ["code": .string("stale_epoch"), "message": .string("old"), "ref": .string("signal")]),
        ]
        for (message, fields) in cases {
            let j = try parse(message)
            #expect(j["type"] == .string(message.type))
            #expect(j["seq"] == .number(4))
            for (k, v) in fields { #expect(j[k] == v, "\(message.type).\(k)") }
        }
    }
}
