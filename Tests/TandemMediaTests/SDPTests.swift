import Testing

@testable import TandemMedia
@testable import TandemMediaCore

/// Offers as real clients write them, and the relay's side of the answer.
enum SDPFixtures {
    static let chromeFingerprint =
        "sha-256 7B:8B:F0:65:5F:78:E2:51:3B:AC:6F:F3:3F:46:1B:35:DC:B8:5F:64:1A:24:C2:43:F0:A1:58:D0:A1:2C:19:08"

    /// Chrome 12x: trickle ICE (no candidates yet), max-compat extmaps, RTX/RED/FEC and a data channel.
    static let chrome = """
        v=0
        o=- 4611731400430051336 2 IN IP4 127.0.0.1
        s=-
        t=0 0
        a=group:BUNDLE 0 1 2
        a=extmap-allow-mixed
        a=msid-semantic: WMS 4f2a1b6c
        m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126
        c=IN IP4 0.0.0.0
        a=rtcp:9 IN IP4 0.0.0.0
        a=ice-ufrag:Kx7b
        a=ice-pwd:Ql3bW7cDq1vWjP9d2Ylk0m3T
        a=ice-options:trickle
        a=fingerprint:\(chromeFingerprint)
        a=setup:actpass
        a=mid:0
        a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level
        a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time
        a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01
        a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid
        a=sendrecv
        a=msid:4f2a1b6c 9a8b7c6d
        a=rtcp-mux
        a=rtcp-rsize
        a=rtpmap:111 opus/48000/2
        a=rtcp-fb:111 transport-cc
        a=fmtp:111 minptime=10;useinbandfec=1
        a=rtpmap:63 red/48000/2
        a=fmtp:63 111/111
        a=rtpmap:9 G722/8000
        a=rtpmap:0 PCMU/8000
        a=rtpmap:8 PCMA/8000
        a=rtpmap:13 CN/8000
        a=rtpmap:110 telephone-event/48000
        a=rtpmap:126 telephone-event/8000
        a=ssrc:3735928559 cname:tZ1rdDUt8ZAmCeDh
        a=ssrc:3735928559 msid:4f2a1b6c 9a8b7c6d
        m=video 9 UDP/TLS/RTP/SAVPF 96 97 98 99 100 101 102 103 104 105 106 107 108
        c=IN IP4 0.0.0.0
        a=rtcp:9 IN IP4 0.0.0.0
        a=ice-ufrag:Kx7b
        a=ice-pwd:Ql3bW7cDq1vWjP9d2Ylk0m3T
        a=ice-options:trickle
        a=fingerprint:\(chromeFingerprint)
        a=setup:actpass
        a=mid:1
        a=extmap:14 urn:ietf:params:rtp-hdrext:toffset
        a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time
        a=extmap:13 urn:3gpp:video-orientation
        a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01
        a=extmap:5 http://www.webrtc.org/experiments/rtp-hdrext/playout-delay
        a=extmap:6 http://www.webrtc.org/experiments/rtp-hdrext/video-content-type
        a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid
        a=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id
        a=extmap:11 urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id
        a=sendrecv
        a=msid:4f2a1b6c 5e6f7a8b
        a=rtcp-mux
        a=rtcp-rsize
        a=rtpmap:96 VP8/90000
        a=rtcp-fb:96 goog-remb
        a=rtcp-fb:96 transport-cc
        a=rtcp-fb:96 ccm fir
        a=rtcp-fb:96 nack
        a=rtcp-fb:96 nack pli
        a=rtpmap:97 rtx/90000
        a=fmtp:97 apt=96
        a=rtpmap:98 VP9/90000
        a=rtcp-fb:98 goog-remb
        a=rtcp-fb:98 transport-cc
        a=rtcp-fb:98 ccm fir
        a=rtcp-fb:98 nack
        a=rtcp-fb:98 nack pli
        a=fmtp:98 profile-id=0
        a=rtpmap:99 rtx/90000
        a=fmtp:99 apt=98
        a=rtpmap:100 H264/90000
        a=rtcp-fb:100 goog-remb
        a=rtcp-fb:100 transport-cc
        a=rtcp-fb:100 ccm fir
        a=rtcp-fb:100 nack
        a=rtcp-fb:100 nack pli
        a=fmtp:100 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f
        a=rtpmap:101 rtx/90000
        a=fmtp:101 apt=100
        a=rtpmap:102 H264/90000
        a=rtcp-fb:102 goog-remb
        a=rtcp-fb:102 transport-cc
        a=rtcp-fb:102 ccm fir
        a=rtcp-fb:102 nack
        a=rtcp-fb:102 nack pli
        a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f
        a=rtpmap:103 rtx/90000
        a=fmtp:103 apt=102
        a=rtpmap:104 H264/90000
        a=rtcp-fb:104 goog-remb
        a=rtcp-fb:104 nack
        a=fmtp:104 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=4d001f
        a=rtpmap:105 rtx/90000
        a=fmtp:105 apt=104
        a=rtpmap:106 red/90000
        a=rtpmap:107 rtx/90000
        a=fmtp:107 apt=106
        a=rtpmap:108 ulpfec/90000
        a=ssrc-group:FID 1111111111 2222222222
        a=ssrc:1111111111 cname:tZ1rdDUt8ZAmCeDh
        a=ssrc:1111111111 msid:4f2a1b6c 5e6f7a8b
        a=ssrc:2222222222 cname:tZ1rdDUt8ZAmCeDh
        a=ssrc:2222222222 msid:4f2a1b6c 5e6f7a8b
        m=application 9 UDP/DTLS/SCTP webrtc-datachannel
        c=IN IP4 0.0.0.0
        a=ice-ufrag:Kx7b
        a=ice-pwd:Ql3bW7cDq1vWjP9d2Ylk0m3T
        a=ice-options:trickle
        a=fingerprint:\(chromeFingerprint)
        a=setup:actpass
        a=mid:2
        a=sctp-port:5000
        a=max-message-size:262144

        """.crlf

    /// aiortc 1.x: candidates gathered up front and written into each m-section, RTX via FID groups.
    static let aiortc = """
        v=0
        o=- 3912345678 3912345678 IN IP4 0.0.0.0
        s=-
        t=0 0
        a=group:BUNDLE 0 1
        a=msid-semantic:WMS *
        m=audio 52345 UDP/TLS/RTP/SAVPF 96 0 8
        c=IN IP4 192.168.1.20
        a=sendrecv
        a=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid
        a=extmap:2 urn:ietf:params:rtp-hdrext:ssrc-audio-level
        a=mid:0
        a=msid:b7d3c5a2 0f1e2d3c
        a=rtcp:9 IN IP4 0.0.0.0
        a=rtcp-mux
        a=ssrc:1834625 cname:aiortc-cname
        a=rtpmap:96 opus/48000/2
        a=rtpmap:0 PCMU/8000
        a=rtpmap:8 PCMA/8000
        a=candidate:5f3c1e2a9b 1 udp 2130706431 192.168.1.20 52345 typ host
        a=candidate:a1b2c3d4e5 1 udp 1694498815 203.0.113.7 52345 typ srflx raddr 192.168.1.20 rport 52345
        a=end-of-candidates
        a=ice-ufrag:abcd
        a=ice-pwd:0123456789abcdefghijkl
        a=fingerprint:sha-256 \(String(repeating: "AA:", count: 31))AA
        a=setup:actpass
        m=video 52345 UDP/TLS/RTP/SAVPF 97 98 99 100 101 102
        c=IN IP4 192.168.1.20
        a=sendrecv
        a=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid
        a=extmap:3 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time
        a=mid:1
        a=msid:b7d3c5a2 7c6b5a49
        a=rtcp:9 IN IP4 0.0.0.0
        a=rtcp-mux
        a=ssrc-group:FID 2345 3456
        a=ssrc:2345 cname:aiortc-cname
        a=ssrc:3456 cname:aiortc-cname
        a=rtpmap:97 VP8/90000
        a=rtcp-fb:97 nack
        a=rtcp-fb:97 nack pli
        a=rtcp-fb:97 goog-remb
        a=rtpmap:98 rtx/90000
        a=fmtp:98 apt=97
        a=rtpmap:99 H264/90000
        a=rtcp-fb:99 nack
        a=rtcp-fb:99 nack pli
        a=rtcp-fb:99 goog-remb
        a=fmtp:99 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f
        a=rtpmap:100 rtx/90000
        a=fmtp:100 apt=99
        a=rtpmap:101 H264/90000
        a=rtcp-fb:101 nack
        a=rtcp-fb:101 nack pli
        a=rtcp-fb:101 goog-remb
        a=fmtp:101 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f
        a=rtpmap:102 rtx/90000
        a=fmtp:102 apt=101
        a=candidate:5f3c1e2a9b 1 udp 2130706431 192.168.1.20 52345 typ host
        a=end-of-candidates
        a=ice-ufrag:abcd
        a=ice-pwd:0123456789abcdefghijkl
        a=fingerprint:sha-256 \(String(repeating: "AA:", count: 31))AA
        a=setup:actpass

        """.crlf

    /// A one-section offer without BUNDLE: `media` is everything from the m-line on.
    static func single(_ media: String, setup: String = "actpass") -> String {
        """
        v=0
        o=- 1 1 IN IP4 0.0.0.0
        s=-
        t=0 0
        a=ice-ufrag:uf01
        a=ice-pwd:pw0123456789012345678901
        a=fingerprint:\(chromeFingerprint)
        a=setup:\(setup)
        \(media)
        """.crlf
    }

    static let opusOnly = """
        m=audio 9 UDP/TLS/RTP/SAVPF 111
        c=IN IP4 0.0.0.0
        a=mid:a
        a=rtcp-mux
        a=rtpmap:111 opus/48000/2
        """

    static func local(candidates: [String] = []) -> SDPLocalEndpoint {
        SDPLocalEndpoint(
            iceUfrag: "relayU", icePwd: "relayPasswordRelayPassword",
            fingerprint: Fingerprint(algorithm: "sha-256", digest: Array(0..<32)), candidates: candidates,
            cname: "relaycname", streamID: "relay", audioSSRC: 1000, videoSSRC: 2000,
            sessionID: 777, sessionVersion: 2)
    }

    /// The answer's lines grouped: session first, then one array per m-section.
    static func sections(_ sdp: String) -> [[String]] {
        var out: [[String]] = [[]]
        for line in sdp.split(separator: "\r\n", omittingEmptySubsequences: true).map(String.init) {
            if line.hasPrefix("m=") { out.append([]) }
            out[out.count - 1].append(line)
        }
        return out
    }

    /// The error a parse (and, given `local`, an answer) fails with, or nil if both succeed.
    static func failure(_ text: String, answering local: SDPLocalEndpoint? = nil) -> MediaError? {
        do {
            let offer = try SessionDescription.parse(text)
            if let local { _ = try offer.answer(local) }
            return nil
        } catch {
            return error
        }
    }
}

extension String {
    /// Multi-line literals end lines with LF; real offers use CRLF.
    fileprivate var crlf: String {
        split(separator: "\n", omittingEmptySubsequences: false).joined(separator: "\r\n")
    }

    fileprivate func removingLines(where drop: (Substring) -> Bool) -> String {
        split(separator: "\r\n", omittingEmptySubsequences: false).filter { !drop($0) }.joined(separator: "\r\n")
    }
}

@Suite struct SDPParseTests {
    @Test func chromeOfferParses() throws {
        let offer = try SessionDescription.parse(SDPFixtures.chrome)
        #expect(offer.media.map(\.kind) == ["audio", "video", "application"])
        #expect(offer.bundle == ["0", "1", "2"])
        #expect(offer.iceUfrag == "Kx7b")
        #expect(offer.icePwd == "Ql3bW7cDq1vWjP9d2Ylk0m3T")
        #expect(offer.fingerprint.description == SDPFixtures.chromeFingerprint)
        #expect(offer.setup == .actpass)
        #expect(offer.candidates.isEmpty && !offer.endOfCandidates && !offer.iceLite)
        let audio = offer.media[0]
        #expect(audio.codecs.map(\.payloadType) == [111, 63, 9, 0, 8, 13, 110, 126])
        #expect(audio.codecs[0] == SDPCodec(payloadType: 111, name: "opus", clockRate: 48000, channels: 2,
                                           fmtp: "minptime=10;useinbandfec=1", feedback: ["transport-cc"]))
        #expect(audio.msid == "4f2a1b6c 9a8b7c6d")
        #expect(audio.rtcpMux && audio.rtcpReducedSize)
        let video = offer.media[1]
        #expect(video.ssrcs == [1111111111])
        #expect(video.codecs.first { $0.payloadType == 102 }?.fmtp == "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f")
        #expect(video.extensions.contains(SDPExtension(id: 4, uri: "urn:ietf:params:rtp-hdrext:sdes:mid")))
        #expect(offer.media[2].formats == ["webrtc-datachannel"] && offer.media[2].codecs.isEmpty)
    }

    @Test func staticPayloadTypesAndWildcardFeedback() throws {
        let offer = try SessionDescription.parse(SDPFixtures.single("""
            m=audio 9 UDP/TLS/RTP/SAVPF 111 0 8 35
            a=mid:a
            a=rtcp-mux
            a=rtpmap:111 opus/48000/2
            a=rtcp-fb:* transport-cc
            a=rtcp-fb:111 nack
            a=ssrc:42 cname:x
            """))
        let codecs = offer.media[0].codecs
        // 0 and 8 are known without rtpmap; 35 is dynamic-looking with none, so unusable.
        #expect(codecs.map(\.name) == ["opus", "PCMU", "PCMA"])
        #expect(codecs[0].feedback == ["transport-cc", "nack"])
        #expect(codecs[1].feedback == ["transport-cc"])
        #expect(offer.media[0].ssrcs == [42])
        #expect(offer.bundle.isEmpty && offer.iceUfrag == "uf01")
    }

    @Test func lfOnlyAndMediaLevelOverridesSession() throws {
        let text = SDPFixtures.single(SDPFixtures.opusOnly + "\na=ice-ufrag:media\na=setup:active")
            .replacing("\r\n", with: "\n")
        #expect(!text.contains("\r"))
        let offer = try SessionDescription.parse(text)
        #expect(offer.iceUfrag == "media")
        #expect(offer.icePwd == "pw0123456789012345678901")
        #expect(offer.setup == .active)
    }
}

@Suite struct SDPAnswerTests {
    @Test func chromeAnswer() throws {
        let offer = try SessionDescription.parse(SDPFixtures.chrome)
        let answer = try offer.answer(SDPFixtures.local())
        #expect(answer.dtlsRole == .server)

        let tcc = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"
        let abs = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
        #expect(answer.media == [
            NegotiatedMedia(
                mid: "0", kind: .audio,
                codec: SDPCodec(payloadType: 111, name: "opus", clockRate: 48000, channels: 2,
                                fmtp: "minptime=10;useinbandfec=1", feedback: ["transport-cc"]),
                direction: .sendrecv,
                extensions: [
                    SDPExtension(id: 1, uri: "urn:ietf:params:rtp-hdrext:ssrc-audio-level"),
                    SDPExtension(id: 2, uri: abs), SDPExtension(id: 3, uri: tcc),
                ],
                remoteSSRC: 3735928559, localSSRC: 1000, rtcpReducedSize: true),
            NegotiatedMedia(
                mid: "1", kind: .video,
                codec: SDPCodec(payloadType: 96, name: "VP8", clockRate: 90000,
                                feedback: ["goog-remb", "transport-cc", "ccm fir", "nack", "nack pli"]),
                direction: .sendrecv,
                extensions: [
                    SDPExtension(id: 14, uri: "urn:ietf:params:rtp-hdrext:toffset"), SDPExtension(id: 2, uri: abs),
                    SDPExtension(id: 13, uri: "urn:3gpp:video-orientation"), SDPExtension(id: 3, uri: tcc),
                ],
                remoteSSRC: 1111111111, localSSRC: 2000, rtcpReducedSize: true),
        ])

        // CRLF everywhere: every LF follows a CR and every CR precedes an LF.
        let bytes = Array(answer.sdp.utf8)
        #expect(bytes.suffix(2) == [13, 10])
        for (i, b) in bytes.enumerated() where b == 10 || b == 13 {
            #expect(b == 10 ? (i > 0 && bytes[i - 1] == 13) : (i + 1 < bytes.count && bytes[i + 1] == 10))
        }

        let sections = SDPFixtures.sections(answer.sdp)
        #expect(sections.count == 4)
        #expect(sections[0] == [
            "v=0", "o=- 777 2 IN IP4 0.0.0.0", "s=-", "t=0 0", "a=group:BUNDLE 0 1", "a=msid-semantic: WMS relay",
        ])
        #expect(sections[1] == [
            "m=audio 9 UDP/TLS/RTP/SAVPF 111",
            "c=IN IP4 0.0.0.0",
            "a=rtcp:9 IN IP4 0.0.0.0",
            "a=ice-ufrag:relayU",
            "a=ice-pwd:relayPasswordRelayPassword",
            "a=ice-options:trickle",
            "a=fingerprint:\(SDPFixtures.local().fingerprint)",
            "a=setup:passive",
            "a=mid:0",
            "a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level",
            "a=extmap:2 \(abs)",
            "a=extmap:3 \(tcc)",
            "a=sendrecv",
            "a=rtcp-mux",
            "a=rtcp-rsize",
            "a=rtpmap:111 opus/48000/2",
            "a=rtcp-fb:111 transport-cc",
            "a=fmtp:111 minptime=10;useinbandfec=1",
            "a=msid:relay relay-audio",
            "a=ssrc:1000 cname:relaycname",
            "a=ssrc:1000 msid:relay relay-audio",
        ])
        let video = sections[2]
        #expect(video.first == "m=video 9 UDP/TLS/RTP/SAVPF 96")
        #expect(video.contains("a=rtpmap:96 VP8/90000") && video.contains("a=rtcp-fb:96 nack pli"))
        #expect(video.contains("a=ssrc:2000 msid:relay relay-video") && video.contains("a=setup:passive"))
        #expect(!video.contains { $0.contains("sdes") || $0.contains("rtx") || $0.contains("a=fmtp") })
        #expect(sections[3] == ["m=application 0 UDP/DTLS/SCTP webrtc-datachannel", "c=IN IP4 0.0.0.0", "a=mid:2"])
        #expect(!answer.sdp.contains("a=candidate") && !answer.sdp.contains("end-of-candidates"))
        #expect(!answer.sdp.contains("ice-lite"))
    }

    @Test func aiortcOffer() throws {
        let offer = try SessionDescription.parse(SDPFixtures.aiortc)
        #expect(offer.candidates == [
            "candidate:5f3c1e2a9b 1 udp 2130706431 192.168.1.20 52345 typ host",
            "candidate:a1b2c3d4e5 1 udp 1694498815 203.0.113.7 52345 typ srflx raddr 192.168.1.20 rport 52345",
        ])
        #expect(offer.endOfCandidates)
        #expect(offer.media[1].candidates.count == 1)
        #expect(offer.media[1].ssrcs == [2345])

        let candidate = "candidate:1 1 UDP 2130706431 198.51.100.1 40000 typ host"
        let answer = try offer.answer(SDPFixtures.local(candidates: [candidate]))
        #expect(answer.media.map(\.codec.payloadType) == [96, 97])
        #expect(answer.media[1].codec.feedback == ["nack", "nack pli", "goog-remb"])
        #expect(answer.media[0].extensions == [SDPExtension(id: 2, uri: "urn:ietf:params:rtp-hdrext:ssrc-audio-level")])
        #expect(answer.media[1].extensions == [SDPExtension(id: 3, uri: "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time")])
        #expect(answer.media.map(\.remoteSSRC) == [1834625, 2345])
        let sections = SDPFixtures.sections(answer.sdp)
        #expect(sections[0].contains("a=group:BUNDLE 0 1"))
        // The bundle's candidates in every section (aiortc reads the last section's for its transport).
        #expect(Array(sections[1].suffix(2)) == ["a=\(candidate)", "a=end-of-candidates"])
        #expect(Array(sections[2].suffix(2)) == ["a=\(candidate)", "a=end-of-candidates"])
    }

    @Test func h264OnlyPrefersConstrainedBaselineWithPacketizationMode1() throws {
        let offer = try SessionDescription.parse(SDPFixtures.single("""
            m=video 9 UDP/TLS/RTP/SAVPF 102 104 106 108 109
            a=mid:v
            a=rtcp-mux
            a=rtpmap:102 H264/90000
            a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42e01f
            a=rtpmap:104 H264/90000
            a=fmtp:104 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=4d001f
            a=rtpmap:106 H264/90000
            a=rtcp-fb:106 nack
            a=rtcp-fb:106 goog-lntf
            a=fmtp:106 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f
            a=rtpmap:108 H264/90000
            a=fmtp:108 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f
            a=rtpmap:109 rtx/90000
            a=fmtp:109 apt=106
            """))
        let answer = try offer.answer(SDPFixtures.local())
        #expect(answer.media.map(\.codec.payloadType) == [106])
        #expect(answer.media[0].codec.feedback == ["nack"])
        #expect(answer.sdp.contains("a=fmtp:106 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n"))
        // One section needs no BUNDLE group, but the answer still declares one.
        #expect(answer.sdp.contains("a=group:BUNDLE v\r\n"))

        // Without 42e01f another baseline profile wins over main (4d).
        let fallback = try SessionDescription.parse(SDPFixtures.single("""
            m=video 9 UDP/TLS/RTP/SAVPF 104 108
            a=mid:v
            a=rtcp-mux
            a=rtpmap:104 H264/90000
            a=fmtp:104 packetization-mode=1;profile-level-id=4d001f
            a=rtpmap:108 H264/90000
            a=fmtp:108 packetization-mode=1;profile-level-id=42001f
            """)).answer(SDPFixtures.local())
        #expect(fallback.media.map(\.codec.payloadType) == [108])
    }

    @Test func directions() throws {
        let recvonly = try SessionDescription.parse(SDPFixtures.single(SDPFixtures.opusOnly + "\na=recvonly"))
            .answer(SDPFixtures.local())
        #expect(recvonly.media[0].direction == .sendonly)
        let sending = SDPFixtures.sections(recvonly.sdp)[1]
        #expect(sending.contains("a=sendonly"))
        #expect(sending.contains("a=msid:relay relay-audio"))
        #expect(sending.contains("a=ssrc:1000 cname:relaycname"))
        #expect(sending.contains("a=ssrc:1000 msid:relay relay-audio"))

        let sendonly = try SessionDescription.parse(SDPFixtures.single(SDPFixtures.opusOnly + "\na=sendonly\na=ssrc:5 cname:c"))
            .answer(SDPFixtures.local())
        #expect(sendonly.media[0].direction == .recvonly)
        #expect(sendonly.media[0].remoteSSRC == 5)
        let receiving = SDPFixtures.sections(sendonly.sdp)[1]
        #expect(receiving.contains("a=recvonly"))
        #expect(!receiving.contains { $0.hasPrefix("a=ssrc:") || $0.hasPrefix("a=msid:") })

        #expect(SDPDirection.inactive.reversed == .inactive && SDPDirection.sendrecv.reversed == .sendrecv)
    }

    @Test func offererPassiveMakesRelayTheDTLSClient() throws {
        let answer = try SessionDescription.parse(SDPFixtures.single(SDPFixtures.opusOnly, setup: "passive"))
            .answer(SDPFixtures.local())
        #expect(answer.dtlsRole == .client)
        #expect(answer.sdp.contains("\r\na=setup:active\r\n"))
        #expect(!answer.sdp.contains("a=setup:passive"))

        let active = try SessionDescription.parse(SDPFixtures.single(SDPFixtures.opusOnly, setup: "active"))
            .answer(SDPFixtures.local())
        #expect(active.dtlsRole == .server)
    }

    @Test func twoSectionsOfOneKindGetDistinctSSRCsAndTracks() throws {
        func video(_ mid: String) -> String {
            "m=video 9 UDP/TLS/RTP/SAVPF 96\na=mid:\(mid)\na=rtcp-mux\na=rtpmap:96 VP8/90000"
        }
        let text = SDPFixtures.single("a=group:BUNDLE a v1 v2\n" + SDPFixtures.opusOnly + "\n" + video("v1") + "\n" + video("v2"))
        let answer = try SessionDescription.parse(text).answer(SDPFixtures.local())
        #expect(answer.media.map(\.localSSRC) == [1000, 2000, 2001])
        #expect(answer.sdp.contains("a=ssrc:2001 msid:relay relay-video-v2\r\n"))
        #expect(answer.sdp.contains("a=msid:relay relay-video-v1\r\n"))
        #expect(answer.sdp.contains("a=msid:relay relay-audio\r\n"))
    }
}

@Suite struct SDPErrorTests {
    typealias F = SDPFixtures

    @Test func missingIceUfrag() {
        let error = F.failure(F.chrome.removingLines { $0.hasPrefix("a=ice-ufrag") })
        #expect(error?.code == .badSDP)
        #expect(error?.message.contains("ice-ufrag") == true)
    }

    @Test func badFingerprint() {
        let error = F.failure(F.chrome.replacing("sha-256 7B:8B", with: "sha-256 ZZ:8B"))
        #expect(error?.code == .badSDP)
        #expect(error?.message.contains("fingerprint") == true)
    }

    @Test func twoSectionsWithoutBundle() {
        let error = F.failure(F.chrome.removingLines { $0.hasPrefix("a=group:") }, answering: F.local())
        #expect(error?.code == .badSDP)
        #expect(error?.message.contains("the relay requires BUNDLE and rtcp-mux") == true)
    }

    @Test func missingRTCPMux() {
        let error = F.failure(F.chrome.removingLines { $0 == "a=rtcp-mux" }, answering: F.local())
        #expect(error?.code == .badSDP)
        #expect(error?.message.contains("rtcp-mux") == true)
    }

    @Test func missingMid() {
        let error = F.failure(F.single(F.opusOnly.replacing("a=mid:a\n", with: "")), answering: F.local())
        #expect(error?.code == .badSDP)
        #expect(error?.message.contains("mid") == true)
    }

    @Test func onlyADataChannel() {
        let text = F.single("""
            m=application 9 UDP/DTLS/SCTP webrtc-datachannel
            a=mid:0
            a=sctp-port:5000
            """)
        #expect(F.failure(text) == nil)
        let error = F.failure(text, answering: F.local())
        #expect(error?.code == .noCommonCodec)
        #expect(error?.message.isEmpty == false)
    }

    @Test func unsupportedCodecsAndProtoAreRejectedNotFatal() throws {
        let text = F.single("""
            a=group:BUNDLE a b c
            m=audio 9 UDP/TLS/RTP/SAVPF 0
            a=mid:a
            a=rtcp-mux
            m=video 9 RTP/AVPF 96
            a=mid:b
            a=rtcp-mux
            a=rtpmap:96 VP8/90000
            m=video 9 UDP/TLS/RTP/SAVPF 98
            a=mid:c
            a=rtcp-mux
            a=rtpmap:98 VP9/90000
            """)
        let error = F.failure(text, answering: F.local())
        #expect(error?.code == .noCommonCodec)
    }

    @Test func garbage() {
        for text in ["hello", "", "\r\n\r\n", "v=1\r\n", "v=0\r\nm=\r\n", "a=ice-ufrag:x\r\nv=0\r\n"] {
            let error = F.failure(text)
            #expect(error?.code == .badSDP, "\(text.debugDescription)")
            #expect(error?.message.isEmpty == false)
        }
    }

    @Test func outOfRangeNumbers() {
        let port = F.failure(F.chrome.replacing("m=audio 9 ", with: "m=audio 70000 "))
        #expect(port?.code == .badSDP)
        #expect(port?.message.contains("port") == true)

        let pt = F.failure(F.chrome.replacing("a=rtpmap:111 opus", with: "a=rtpmap:300 opus"))
        #expect(pt?.code == .badSDP)

        let ext = F.failure(F.chrome.replacing("a=extmap:1 urn", with: "a=extmap:0 urn"))
        #expect(ext?.code == .badSDP)
        #expect(ext?.message.contains("extension id") == true)

        let ssrc = F.failure(F.chrome.replacing("a=ssrc:3735928559 cname", with: "a=ssrc:99999999999 cname"))
        #expect(ssrc?.code == .badSDP)
    }

    @Test func limits() {
        func sections(_ n: Int) -> String {
            F.single((0..<n).map { "m=audio 9 UDP/TLS/RTP/SAVPF 111\na=mid:\($0)\na=rtcp-mux\na=rtpmap:111 opus/48000/2" }
                .joined(separator: "\n"))
        }
        #expect(F.failure(sections(16)) == nil)
        let seventeen = F.failure(sections(17))
        #expect(seventeen?.code == .badSDP)
        #expect(seventeen?.message.contains("m-sections") == true)

        let lines = F.failure(F.single(F.opusOnly + String(repeating: "\na=x", count: 4001)))
        #expect(lines?.message.contains("lines") == true)

        let big = F.failure(F.single(F.opusOnly + "\na=" + String(repeating: "x", count: 70_000)))
        #expect(big?.code == .badSDP)
        #expect(big?.message.contains("limit") == true)
    }

    @Test func binaryJunk() {
        var random = SplitMix64(state: 7)
        func next() -> UInt32 { UInt32(truncatingIfNeeded: random.next()) }
        for round in 0..<20 {
            var junk = round.isMultiple(of: 2) ? "v=0\r\n" : ""
            for _ in 0..<500 {
                // Mostly low code points so that '=', ':', CR and LF turn up.
                let limit: UInt32 = next() % 4 == 0 ? 0x11_0000 : 0x80
                if let scalar = Unicode.Scalar(next() % limit) { junk.unicodeScalars.append(scalar) }
            }
            #expect(F.failure(junk)?.code == .badSDP)
        }
    }

    @Test func mutationsNeverCrash() {
        let base = F.chrome
        var mutations: [String] = []
        let characters = Array(base)
        for n in stride(from: 0, to: characters.count, by: 37) { mutations.append(String(characters[..<n])) }
        let lines = base.split(separator: "\r\n", omittingEmptySubsequences: false)
        for i in lines.indices {
            var copy = lines
            copy.remove(at: i)
            mutations.append(copy.joined(separator: "\r\n"))
        }
        for digit in "0123456789" {
            for replacement in ["", "x", "99999999999999999999", "-1", String(digit) + String(digit)] {
                mutations.append(String(base.flatMap { $0 == digit ? Array(replacement) : [$0] }))
            }
        }
        #expect(mutations.count > 250)

        var parsed = 0
        var answered = 0
        for text in mutations {
            guard let offer = try? SessionDescription.parse(text) else { continue }
            parsed += 1
            if (try? offer.answer(F.local(candidates: ["candidate:1 1 UDP 1 192.0.2.1 9 typ host"]))) != nil { answered += 1 }
        }
        #expect(parsed > 0)
        #expect(answered > 0)
    }
}

/// The relay's own offers: adding a kind the client did not offer, and reading the client's answer.
@Suite struct SDPReofferTests {
    typealias F = SDPFixtures

    /// aiortc's offer without its video section.
    static var audioOnly: SessionDescription {
        get throws {
            let full = F.aiortc
            let text = String(full[..<full.firstRange(of: "m=video")!.lowerBound]).replacing("a=group:BUNDLE 0 1", with: "a=group:BUNDLE 0")
            return try SessionDescription.parse(text)
        }
    }

    @Test func addsASendOnlyVideoSectionWithFreePayloadTypesOnTheSameTransport() throws {
        let offer = try Self.audioOnly
        let answer = try offer.answer(F.local())
        #expect(answer.media.map(\.kind) == [.audio])
        let reoffer = offer.reoffer(negotiated: answer.media, adding: [.video], local: F.local())
        #expect(reoffer.added.map(\.mid) == ["1"])
        // Opus is 96 in the client's bundle: video takes the next free payload types.
        #expect(reoffer.added[0].codecs.map(\.payloadType) == [97, 98])
        #expect(reoffer.added[0].codecs.map(\.name) == ["VP8", "H264"])
        let sections = F.sections(reoffer.sdp)
        #expect(sections[0].contains("a=group:BUNDLE 0 1"))
        #expect(sections[1][0] == "m=audio 9 UDP/TLS/RTP/SAVPF 96" && sections[1].contains("a=sendrecv") && sections[1].contains("a=mid:0"))
        #expect(sections[2][0] == "m=video 9 UDP/TLS/RTP/SAVPF 97 98")
        for line in ["a=sendonly", "a=mid:1", "a=setup:actpass", "a=ice-ufrag:relayU", "a=rtcp-mux", "a=rtpmap:97 VP8/90000", "a=rtcp-fb:97 nack pli",
                     "a=ssrc:2000 cname:relaycname"] {
            #expect(sections[2].contains(line), "\(line)")
        }
        #expect(!reoffer.sdp.contains("a=candidate"), "no ICE restart: the transport stays")
        #expect(reoffer.sdp.hasSuffix("\r\n") && !reoffer.sdp.replacing("\r\n", with: "").contains("\n"))
        // The relay's offer is itself well-formed SDP.
        #expect(try SessionDescription.parse(reoffer.sdp).media.count == 2)
    }

    static func clientAnswer(video: String) -> String {
        """
        v=0
        o=- 1 2 IN IP4 0.0.0.0
        s=-
        t=0 0
        a=group:BUNDLE 0 1
        m=audio 9 UDP/TLS/RTP/SAVPF 96
        c=IN IP4 0.0.0.0
        a=mid:0
        a=sendrecv
        a=rtcp-mux
        a=rtpmap:96 opus/48000/2
        a=ice-ufrag:abcd
        a=ice-pwd:0123456789abcdefghijkl
        a=fingerprint:sha-256 \(String(repeating: "AA:", count: 31))AA
        a=setup:active
        \(video)
        """.crlf
    }

    @Test func readsWhatTheClientAcceptedOfTheAddedSection() throws {
        let offer = try Self.audioOnly
        let reoffer = offer.reoffer(negotiated: try offer.answer(F.local()).media, adding: [.video], local: F.local())
        let accepted = try SessionDescription.parse(Self.clientAnswer(video: """
            m=video 9 UDP/TLS/RTP/SAVPF 98
            c=IN IP4 0.0.0.0
            a=mid:1
            a=recvonly
            a=rtcp-mux
            a=rtpmap:98 H264/90000
            a=rtcp-fb:98 nack
            a=fmtp:98 packetization-mode=1;profile-level-id=42e01f
            """)).accepted(reoffer.added)
        #expect(accepted.count == 1)
        #expect(accepted.first?.kind == .video && accepted.first?.mid == "1" && accepted.first?.direction == .sendonly)
        #expect(accepted.first?.codec.payloadType == 98 && accepted.first?.codec.name == "H264")
        #expect(accepted.first?.codec.feedback == ["nack"], "only the feedback both sides listed")
        #expect(accepted.first?.localSSRC == 2000)

        let refused = try SessionDescription.parse(Self.clientAnswer(video: "m=video 0 UDP/TLS/RTP/SAVPF 97\r\nc=IN IP4 0.0.0.0\r\na=mid:1"))
        #expect(refused.accepted(reoffer.added).isEmpty)
        let foreign = try SessionDescription.parse(Self.clientAnswer(video: "m=video 9 UDP/TLS/RTP/SAVPF 120\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\na=recvonly\r\na=rtcp-mux\r\na=rtpmap:120 AV1/90000"))
        #expect(foreign.accepted(reoffer.added).isEmpty, "a codec the relay did not offer is not taken")
    }
}
