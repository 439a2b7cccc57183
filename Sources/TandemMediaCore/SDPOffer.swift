/// A section the relay adds by renegotiating: it sends the peer's media of a kind the client did not
/// offer (an audio-only client still sees the other side's camera).
public struct SDPAddedSection: Sendable, Equatable {
    public var mid: String
    public var kind: MediaKind
    /// What the relay offers, in preference order, with payload types free in the client's bundle.
    public var codecs: [SDPCodec]
    public var localSSRC: UInt32
}

/// The relay's own offer on an established transport.
public struct SDPOffer: Sendable, Equatable {
    public var sdp: String
    public var added: [SDPAddedSection]
}

extension SessionDescription {
    /// An offer from the relay on the transport this client offer set up (same ICE credentials, DTLS
    /// `actpass`, no ICE restart): the client's sections as negotiated, rejected ones kept at port 0, and
    /// a send-only section for each kind in `adding`.
    public func reoffer(negotiated: [NegotiatedMedia], adding kinds: [MediaKind], local: SDPLocalEndpoint) -> SDPOffer {
        var used = Set(media.flatMap { $0.codecs.map(\.payloadType) })
        func freePayloadType() -> UInt8 {
            let pt = (96...127).map(UInt8.init).first { !used.contains($0) } ?? 127
            used.insert(pt)
            return pt
        }
        var mids = Set(media.compactMap(\.mid))
        var next = 0
        var added: [SDPAddedSection] = []
        for kind in kinds {
            while mids.contains(String(next)) { next += 1 }
            let mid = String(next)
            mids.insert(mid)
            let feedback = kind == .video ? Self.videoFeedback.filter { $0 != "transport-cc" } : []
            let codecs: [SDPCodec] =
                kind == .audio
                ? [SDPCodec(payloadType: freePayloadType(), name: "opus", clockRate: 48_000, channels: 2, fmtp: "minptime=10;useinbandfec=1", feedback: [])]
                : [
                    SDPCodec(payloadType: freePayloadType(), name: "VP8", clockRate: 90_000, channels: nil, fmtp: nil, feedback: feedback),
                    SDPCodec(
                        payloadType: freePayloadType(), name: "H264", clockRate: 90_000, channels: nil,
                        fmtp: "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f", feedback: feedback),
                ]
            // A kind the client never offered: the relay's SSRC for it is free on this leg.
            let ssrc = kind == .audio ? local.audioSSRC : local.videoSSRC
            added.append(SDPAddedSection(mid: mid, kind: kind, codecs: codecs, localSSRC: ssrc))
        }

        var lines = [
            "v=0",
            "o=- \(local.sessionID) \(local.sessionVersion) IN IP4 0.0.0.0",
            "s=-",
            "t=0 0",
            "a=group:BUNDLE " + (negotiated.map(\.mid) + added.map(\.mid)).joined(separator: " "),
            "a=msid-semantic: WMS \(local.streamID)",
        ]
        let transport = [
            "c=IN IP4 0.0.0.0", "a=rtcp:9 IN IP4 0.0.0.0", "a=ice-ufrag:\(local.iceUfrag)", "a=ice-pwd:\(local.icePwd)",
            "a=ice-options:trickle", "a=fingerprint:\(local.fingerprint.description)", "a=setup:actpass",
        ]
        func sends(_ kind: MediaKind, mid: String, ssrc: UInt32) -> [String] {
            local.sendingLines(ssrc: ssrc, trackID: "\(local.streamID)-\(kind.rawValue)-\(mid)")
        }
        for m in media {
            guard let mid = m.mid, let n = negotiated.first(where: { $0.mid == mid }) else {
                lines += ["m=\(m.kind) 0 \(m.proto) \(m.formats.first ?? "0")", "c=IN IP4 0.0.0.0"] + (m.mid.map { ["a=mid:\($0)"] } ?? [])
                continue
            }
            let pt = n.codec.payloadType
            lines.append("m=\(n.kind.rawValue) 9 UDP/TLS/RTP/SAVPF \(pt)")
            lines += transport + ["a=mid:\(mid)"] + n.extensions.map { "a=extmap:\($0.id) \($0.uri)" }
            lines += ["a=\(n.direction.rawValue)", "a=rtcp-mux"] + (n.rtcpReducedSize ? ["a=rtcp-rsize"] : [])
            lines += Self.codecLines(n.codec)
            if n.direction.sends { lines += sends(n.kind, mid: mid, ssrc: n.localSSRC) }
        }
        for a in added {
            lines.append("m=\(a.kind.rawValue) 9 UDP/TLS/RTP/SAVPF " + a.codecs.map { String($0.payloadType) }.joined(separator: " "))
            lines += transport + ["a=mid:\(a.mid)", "a=sendonly", "a=rtcp-mux", "a=rtcp-rsize"]
            lines += a.codecs.flatMap(Self.codecLines)
            lines += sends(a.kind, mid: a.mid, ssrc: a.localSSRC)
        }
        return SDPOffer(sdp: lines.joined(separator: "\r\n") + "\r\n", added: added)
    }

    static func codecLines(_ c: SDPCodec) -> [String] {
        ["a=rtpmap:\(c.payloadType) \(c.name)/\(c.clockRate)" + (c.channels.map { "/\($0)" } ?? "")]
            + c.feedback.map { "a=rtcp-fb:\(c.payloadType) \($0)" } + (c.fmtp.map { ["a=fmtp:\(c.payloadType) \($0)"] } ?? [])
    }

    /// What the client's answer (this description) accepted of the sections the relay added: the codec
    /// it chose (the first of ours it lists) and the relay's direction. Refused sections are left out.
    public func accepted(_ added: [SDPAddedSection]) -> [NegotiatedMedia] {
        added.compactMap { a in
            guard let m = media.first(where: { $0.mid == a.mid }), m.port != 0 else { return nil }
            guard
                let chosen = m.codecs.lazy.compactMap({ answered in
                    a.codecs.first { $0.payloadType == answered.payloadType && $0.name.lowercased() == answered.name.lowercased() }
                }).first
            else { return nil }
            var codec = chosen
            let answeredFeedback = m.codecs.first { $0.payloadType == chosen.payloadType }?.feedback ?? []
            codec.feedback = chosen.feedback.filter { answeredFeedback.contains($0) }
            let direction: SDPDirection = m.direction.receives ? .sendonly : .inactive
            return NegotiatedMedia(
                mid: a.mid, kind: a.kind, codec: codec, direction: direction, extensions: [], remoteSSRC: nil, localSSRC: a.localSSRC,
                rtcpReducedSize: m.rtcpReducedSize)
        }
    }
}
