import Synchronization
import TandemMediaTestSupport
import Testing

@testable import TandemMedia
@testable import TandemMediaCore

/// The relay with two in-process WebRTC endpoints (libnice, DTLS, SRTP) on loopback: what one sends,
/// the other gets, under the relay's SSRC; keyframe requests and NACKs are handled as a relay must.
@Suite(.serialized) struct RelayIntegrationTests {
    typealias W = RTCPWire

    static func nack(sender: UInt32, media: UInt32, pid: UInt16) -> [UInt8] {
        W.fb(pt: 205, fmt: 1, sender: sender, media: media, fci: W.u16(pid) + W.u16(0))
    }

    @Test func mediaKeyframeRequestsAndNACKsThroughTheRelay() throws {
        let relay = MediaRelay(
            configuration: RelayConfiguration(ice: ICEConfiguration(addresses: ["127.0.0.1"]), loops: 1), identity: try .generate())
        defer { relay.shutdown() }
        let outputs = Mutex<[RelayOutput]>([])
        let session = relay.open(session: "it", epoch: 3) { output in outputs.withLock { $0.append(output) } }
        let ann = try RelayTestClient(name: "ann", keep: true)
        let ben = try RelayTestClient(name: "ben", keep: true)
        defer {
            ann.close()
            ben.close()
        }
        try connect([ann, ben], to: session, relay: relay, outputs: outputs)
        #expect(relay.counters.legsOpen.load(ordering: .relaxed) == 1 + 1)
        // Every output names the epoch the relay was opened for.
        #expect(outputs.withLock { $0 }.allSatisfy { output in
            switch output {
            case .answer(_, let e, _), .offer(_, let e, _), .candidate(_, let e, _, _, _), .endOfCandidates(_, let e), .rejected(_, let e, _), .media(_, let e, _, _),
                .stats(_, let e, _): e == 3
            }
        })

        // Both legs are up, whichever came first: the relay asked each for a keyframe of its video.
        for (client, name) in [(ann, "Ann"), (ben, "Ben")] {
            try waitUntil(5, "a PLI to \(name)") {
                client.packets.withLock { $0.contains { $0.rtcp && $0.plain.count >= 12 && $0.plain[1] == 206 && $0.plain[0] & 0x1F == 1 && W.u32($0.plain, at: 8) == RelayTestClient.videoSSRC } }
            }
        }

        try runOnLoop(ann.loop) { ann.sendVideo(count: 30, size: 1200) }
        try waitUntil(5, "Ben receiving Ann's video") { ben.received.load(ordering: .acquiring) >= 30 }
        let video = ben.packets.withLock { $0.filter { !$0.rtcp } }
        #expect(video.count == 30)
        let ssrcs = Set(video.map { W.u32($0.plain, at: 8) })
        #expect(ssrcs.count == 1 && !ssrcs.contains(RelayTestClient.videoSSRC), "the relay's own SSRC, not Ann's")
        #expect(video.allSatisfy { $0.plain.count == 1200 - 16 && $0.plain[1] & 0x7F == 96 && $0.plain[12...].allSatisfy { $0 == 0xAB } })
        let seqs = video.map { W.u16($0.plain, at: 2) }
        #expect(zip(seqs, seqs.dropFirst()).allSatisfy { $1 == $0 &+ 1 }, "continuous numbering: \(seqs)")

        // Ben lost a packet: the relay re-sends the very bytes it sent, without bothering Ann.
        let relaySSRC = ssrcs.first!
        let lost = video[7]
        try runOnLoop(ben.loop) { ben.sendRTCP(Self.nack(sender: 9, media: relaySSRC, pid: W.u16(lost.plain, at: 2))) }
        try waitUntil(5, "the retransmission") { ben.packets.withLock { $0.filter { $0.raw == lost.raw }.count } == 2 }
        // Counted on the loop right after the send, so perhaps a moment after Ben has it.
        try waitUntil(5, "the retransmission counted") { relay.counters.retransmissions.load(ordering: .relaxed) >= 1 }
        #expect(relay.counters.retransmissions.load(ordering: .relaxed) == 1)

        // A packet the relay no longer holds: the NACK goes on to Ann, in her own SSRC.
        try runOnLoop(ben.loop) { ben.sendRTCP(Self.nack(sender: 9, media: relaySSRC, pid: seqs[0] &- 1000)) }
        try waitUntil(5, "the NACK forwarded to Ann") {
            ann.packets.withLock { $0.contains { $0.rtcp && $0.plain.count >= 16 && $0.plain[1] == 205 && W.u32($0.plain, at: 8) == RelayTestClient.videoSSRC } }
        }
        let forwarded = ann.packets.withLock { $0.first { $0.rtcp && $0.plain[1] == 205 }! }
        #expect(W.u16(forwarded.plain, at: 12) == seqs[0] &- 1000)
        #expect(ann.packets.withLock { $0.filter { $0.rtcp && $0.plain[1] == 205 }.count } == 1, "the answered NACK was not forwarded")

        // Closing the session tears every leg down.
        session.close()
        try waitUntil(5, "the legs closed") { relay.counters.legsOpen.load(ordering: .relaxed) == 0 }
    }

    @Test func aThirdParticipantAndAnUnusableOfferAreRefusedWithoutHarm() throws {
        let relay = MediaRelay(
            configuration: RelayConfiguration(ice: ICEConfiguration(addresses: ["127.0.0.1"]), loops: 1), identity: try .generate())
        defer { relay.shutdown() }
        let outputs = Mutex<[RelayOutput]>([])
        let session = relay.open(session: "it2", epoch: 1) { output in outputs.withLock { $0.append(output) } }
        session.signal(from: "x", .offer(sdp: "v=0\r\nnot sdp"))
        session.signal(from: "x", .candidate("candidate:garbage"))
        try waitUntil(5, "the rejection") { outputs.withLock { $0.contains { if case .rejected("x", 1, let e) = $0 { e.code == .badSDP } else { false } } } }
        let ann = try RelayTestClient(name: "ann")
        let ben = try RelayTestClient(name: "ben")
        let cat = try RelayTestClient(name: "cat")
        defer {
            for c in [ann, ben, cat] { c.close() }
        }
        try connect([ann, ben], to: session, relay: relay, outputs: outputs)
        let offer = try runOnLoop(cat.loop) { try cat.offer() }
        session.signal(from: "cat", .offer(sdp: offer))
        try waitUntil(5, "cat refused") { outputs.withLock { $0.contains { if case .rejected("cat", _, let e) = $0 { e.code == .unavailable } else { false } } } }
        try runOnLoop(ann.loop) { ann.sendVideo(count: 5, size: 600) }
        try waitUntil(5, "the call goes on") { ben.received.load(ordering: .acquiring) >= 5 }

        // A client cycling SSRCs: a handful are served (8 in all), the rest dropped, not kept by libsrtp.
        let dropped = relay.counters.dropped.load(ordering: .relaxed)
        try runOnLoop(ann.loop) {
            for ssrc in UInt32(3000)..<3012 { ann.sendVideo(count: 1, size: 600, ssrc: ssrc) }
            ann.sendVideo(count: 1, size: 600)
        }
        try waitUntil(5, "the known SSRC still forwarded") { ben.received.load(ordering: .acquiring) >= 5 + 7 + 1 }
        try waitUntil(5, "the rest dropped") { relay.counters.dropped.load(ordering: .relaxed) >= dropped + 5 }
        #expect(ben.received.load(ordering: .acquiring) == 5 + 7 + 1)
        session.close()
    }

    @Test func anAnnouncedAddressIsWhatTheAnswerCarries() throws {
        let ice = ICEConfiguration(addresses: ["127.0.0.1"], announced: ["203.0.113.7"])
        let relay = MediaRelay(configuration: RelayConfiguration(ice: ice, loops: 1), identity: try .generate())
        defer { relay.shutdown() }
        let outputs = Mutex<[RelayOutput]>([])
        let session = relay.open(session: "announced", epoch: 1) { output in outputs.withLock { $0.append(output) } }
        defer { session.close() }
        // No candidates in the offer: the relay answers without ever sending a check anywhere.
        let offer = [
            "v=0", "o=- 1 1 IN IP4 0.0.0.0", "s=-", "t=0 0", "a=group:BUNDLE 0", "m=audio 9 UDP/TLS/RTP/SAVPF 111", "c=IN IP4 0.0.0.0",
            "a=mid:0", "a=ice-ufrag:abcd", "a=ice-pwd:0123456789abcdefghijkl", "a=fingerprint:\(relay.identity.fingerprint)",
            "a=setup:actpass", "a=sendrecv", "a=rtcp-mux", "a=rtpmap:111 opus/48000/2",
        ].joined(separator: "\r\n") + "\r\n"
        session.signal(from: "ann", .offer(sdp: offer))
        var answer = ""
        try waitUntil(5, "the answer") {
            answer = outputs.withLock { $0.lazy.compactMap { if case let .answer(_, _, sdp) = $0 { sdp } else { nil } }.first } ?? ""
            return !answer.isEmpty
        }
        let candidates = answer.split(separator: "\r\n").filter { $0.hasPrefix("a=candidate:") }
        #expect(!candidates.isEmpty)
        #expect(candidates.allSatisfy { $0.contains(" 203.0.113.7 ") && !$0.contains("127.0.0.1") }, "\(candidates)")
    }
}
