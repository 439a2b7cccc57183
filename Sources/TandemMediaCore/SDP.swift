// SDP offer parsing and the relay's answer: RFC 8866 syntax, JSEP (RFC 8829) and BUNDLE (RFC 8843)
// semantics, cut down to what a back-to-back relay needs. Offers come from untrusted clients, so the
// parser is bounded (bytes, lines, sections) and every malformed field is a `bad_sdp` error, never a trap.

/// The media kinds the relay forwards.
public enum MediaKind: String, Sendable, CaseIterable {
    case audio, video
}

/// An m-section's `a=sendrecv` / `a=sendonly` / `a=recvonly` / `a=inactive`.
public enum SDPDirection: String, Sendable {
    case sendrecv, sendonly, recvonly, inactive

    /// The direction the answerer uses for this offered direction (sendonly <-> recvonly).
    public var reversed: SDPDirection {
        switch self {
        case .sendonly: .recvonly
        case .recvonly: .sendonly
        case .sendrecv, .inactive: self
        }
    }

    package var sends: Bool { self == .sendrecv || self == .sendonly }
    /// Whether this side receives media.
    package var receives: Bool { self == .sendrecv || self == .recvonly }
}

/// `a=setup` (RFC 4145 / 5763): which side opens the DTLS handshake.
public enum SDPSetup: String, Sendable {
    case actpass, active, passive
}

/// One payload type of an m-section, from `a=rtpmap`, `a=fmtp` and `a=rtcp-fb`.
public struct SDPCodec: Sendable, Equatable {
    public var payloadType: UInt8
    /// As written in rtpmap, e.g. `VP8`, `opus`, `H264`.
    public var name: String
    public var clockRate: Int
    public var channels: Int?
    public var fmtp: String?
    /// rtcp-fb values for this payload type (including `*` ones), e.g. `nack`, `nack pli`, `transport-cc`.
    public var feedback: [String]

    public init(payloadType: UInt8, name: String, clockRate: Int, channels: Int? = nil, fmtp: String? = nil, feedback: [String] = []) {
        self.payloadType = payloadType
        self.name = name
        self.clockRate = clockRate
        self.channels = channels
        self.fmtp = fmtp
        self.feedback = feedback
    }

    /// An fmtp parameter's value (`key=value;…`, key case-insensitive).
    func parameter(_ key: String) -> String? {
        guard let fmtp else { return nil }
        for part in fmtp.split(separator: ";") {
            guard let (k, v) = cut(part, at: UInt8(ascii: "=")) else { continue }
            if trimmed(k).lowercased() == key { return String(trimmed(v)) }
        }
        return nil
    }
}

/// RTP header extensions the relay understands.
public enum RTPHeaderExtension: String, Sendable, CaseIterable {
    case audioLevel = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"
    case absSendTime = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
    case transportCC = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"
    case videoOrientation = "urn:3gpp:video-orientation"
    case timeOffset = "urn:ietf:params:rtp-hdrext:toffset"

    func applies(to kind: MediaKind) -> Bool {
        switch self {
        case .audioLevel: kind == .audio
        case .videoOrientation: kind == .video
        case .absSendTime, .transportCC, .timeOffset: true
        }
    }
}

/// An `a=extmap:<id> <uri>` line.
public struct SDPExtension: Sendable, Equatable {
    public var id: UInt8
    public var uri: String

    public init(id: UInt8, uri: String) {
        self.id = id
        self.uri = uri
    }
}

/// One parsed m-section of an offer.
public struct SDPMedia: Sendable, Equatable {
    /// `audio`, `video`, `application`, … as written.
    public var kind: String
    public var port: Int
    /// E.g. `UDP/TLS/RTP/SAVPF`.
    public var proto: String
    /// The m-line's format tokens as written: payload types for RTP, `webrtc-datachannel` for SCTP.
    public var formats: [String]
    public var mid: String? = nil
    public var direction: SDPDirection = .sendrecv
    /// In m-line order; payload types without rtpmap are dropped unless statically known (0, 8).
    public var codecs: [SDPCodec] = []
    public var extensions: [SDPExtension] = []
    /// Primary SSRCs from `a=ssrc`, in order: members of an FID / FEC-FR group after the first (RTX,
    /// FEC) are left out.
    public var ssrcs: [UInt32] = []
    public var rtcpMux = false
    public var rtcpReducedSize = false
    /// `a=bundle-only` (RFC 8843): port 0, yet meant to be accepted into the BUNDLE group.
    public var bundleOnly = false
    public var msid: String? = nil
    public var iceUfrag: String? = nil
    public var icePwd: String? = nil
    public var fingerprint: Fingerprint? = nil
    public var setup: SDPSetup? = nil
    /// Raw `a=candidate` values without `a=`, e.g. `candidate:1 1 UDP 2130706431 127.0.0.1 5000 typ host`.
    public var candidates: [String] = []
    public var endOfCandidates = false
}

/// A parsed offer.
public struct SessionDescription: Sendable, Equatable {
    public var media: [SDPMedia]
    /// The mids of `a=group:BUNDLE`, the tagged one first.
    public var bundle: [String]
    /// ICE credentials, fingerprint and setup resolved from the first bundled m-section, falling back to session level.
    public var iceUfrag: String
    public var icePwd: String
    public var fingerprint: Fingerprint
    /// `actpass` when the offer has no `a=setup`.
    public var setup: SDPSetup
    public var iceLite: Bool
    /// Candidates of the bundle transport (the first bundled m-section's), raw as in `SDPMedia.candidates`.
    public var candidates: [String]
    public var endOfCandidates: Bool

    static let maxBytes = 64 * 1024
    static let maxLines = 4000
    static let maxSections = 16

    /// Parses an offer; any malformed or out-of-range field is `MediaError(.badSDP, …)` naming it.
    public static func parse(_ text: String) throws(MediaError) -> SessionDescription {
        guard text.utf8.count <= maxBytes else {
            throw MediaError(.badSDP, "the SDP is \(text.utf8.count) bytes; the limit is \(maxBytes)")
        }
        var parser = SDPParser()
        var number = 0
        var lines = 0
        // "\r\n" is one Character, so it is a separator of its own; a lone CR also ends a line, so
        // none can reach a value that the answer echoes.
        for raw in text.split(omittingEmptySubsequences: false, whereSeparator: { $0 == "\n" || $0 == "\r\n" || $0 == "\r" }) {
            number += 1
            let line = trimmedTrailing(raw)
            if line.isEmpty { continue }
            lines += 1
            guard lines <= maxLines else { throw MediaError(.badSDP, "the SDP has more than \(maxLines) lines") }
            try parser.feed(line, number: number)
        }
        return try parser.finish()
    }
}

// MARK: - Parsing

private struct RTPMap {
    var name: String
    var clockRate: Int
    var channels: Int?
}

/// An m-section being read: codec attributes are gathered by payload type and resolved at its end,
/// since rtpmap, fmtp and rtcp-fb may come in any order.
private struct SectionBuilder {
    var media: SDPMedia
    let isRTP: Bool
    var payloadTypes: [UInt8] = []
    var rtpmaps: [UInt8: RTPMap] = [:]
    var fmtps: [UInt8: String] = [:]
    /// nil payload type: `a=rtcp-fb:*`.
    var feedback: [(pt: UInt8?, value: String)] = []
    var ssrcs: [UInt32] = []
    var seenSSRCs: Set<UInt32> = []
    var secondarySSRCs: Set<UInt32> = []
    var sawDirection = false

    func build(defaultDirection: SDPDirection) -> SDPMedia {
        var media = media
        if !sawDirection { media.direction = defaultDirection }
        for pt in payloadTypes {
            var codec: SDPCodec
            if let map = rtpmaps[pt] {
                codec = SDPCodec(payloadType: pt, name: map.name, clockRate: map.clockRate, channels: map.channels)
            } else if pt == 0 {
                codec = SDPCodec(payloadType: 0, name: "PCMU", clockRate: 8000)
            } else if pt == 8 {
                codec = SDPCodec(payloadType: 8, name: "PCMA", clockRate: 8000)
            } else {
                continue  // a dynamic type nobody described: unusable
            }
            codec.fmtp = fmtps[pt]
            // A set, not `contains`: thousands of `rtcp-fb:*` lines must not cost quadratic time per codec.
            var seen = Set<String>()
            for fb in feedback where (fb.pt == nil || fb.pt == pt) && seen.insert(fb.value).inserted {
                codec.feedback.append(fb.value)
            }
            media.codecs.append(codec)
        }
        media.ssrcs = ssrcs.filter { !secondarySSRCs.contains($0) }
        return media
    }
}

private struct SDPParser {
    var sawVersion = false
    var ufrag: String?
    var pwd: String?
    var fingerprint: Fingerprint?
    var setup: SDPSetup?
    var direction: SDPDirection = .sendrecv
    var bundle: [String]?
    var iceLite = false
    var endOfCandidates = false
    var finished: [SectionBuilder] = []
    var current: SectionBuilder?

    mutating func feed(_ line: Substring, number: Int) throws(MediaError) {
        let bytes = line.utf8
        guard bytes.count >= 2, let type = bytes.first, type >= UInt8(ascii: "a"), type <= UInt8(ascii: "z"),
              bytes[bytes.index(after: bytes.startIndex)] == UInt8(ascii: "=")
        else { throw bad(number, line, "is not of the form x=value") }
        for scalar in line.unicodeScalars where (scalar.value < 0x20 && scalar.value != 0x09) || scalar.value == 0x7F {
            throw bad(number, line, "contains a control character (U+\(String(scalar.value, radix: 16, uppercase: true)))")
        }
        let value = line[bytes.index(bytes.startIndex, offsetBy: 2)...]
        if !sawVersion {
            guard type == UInt8(ascii: "v"), value == "0" else {
                throw MediaError(.badSDP, "an SDP must start with v=0, not \(quote(line))")
            }
            sawVersion = true
            return
        }
        switch type {
        case UInt8(ascii: "m"): try startSection(value, line: line, number: number)
        case UInt8(ascii: "a"):
            let (name, arg) = cut(value, at: UInt8(ascii: ":")) ?? (value, "")
            if current != nil {
                try mediaAttribute(name, arg, line: line, number: number)
            } else {
                try sessionAttribute(name, arg, line: line, number: number)
            }
        default: return  // o=, s=, t=, c=, b= … carry nothing the relay uses
        }
    }

    mutating func startSection(_ value: Substring, line: Substring, number: Int) throws(MediaError) {
        if let current { finished.append(current) }
        current = nil
        guard finished.count < SessionDescription.maxSections else {
            throw MediaError(.badSDP, "the SDP has more than \(SessionDescription.maxSections) m-sections")
        }
        let tokens = value.split(separator: " ")
        guard tokens.count >= 4 else { throw bad(number, line, "needs media, port, proto and at least one format") }
        let portText = tokens[1].split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false).first ?? tokens[1]
        guard let port = integer(portText, 0...65535) else { throw bad(number, line, "has port \(quote(portText)), not 0-65535") }
        let proto = String(tokens[2])
        let isRTP = proto.contains("RTP")
        var builder = SectionBuilder(
            media: SDPMedia(kind: String(tokens[0]), port: port, proto: proto, formats: tokens[3...].map(String.init)),
            isRTP: isRTP)
        if isRTP {
            for token in tokens[3...] {
                guard let pt: UInt8 = integer(token, 0...127) else {
                    throw bad(number, line, "has payload type \(quote(token)), not 0-127")
                }
                if !builder.payloadTypes.contains(pt) { builder.payloadTypes.append(pt) }
            }
        }
        current = builder
    }

    mutating func sessionAttribute(_ name: Substring, _ arg: Substring, line: Substring, number: Int) throws(MediaError) {
        switch name {
        case "ice-ufrag": ufrag = try credential(arg, line: line, number: number)
        case "ice-pwd": pwd = try credential(arg, line: line, number: number)
        case "fingerprint":
            let parsed = try fingerprintValue(arg, line: line, number: number)
            if fingerprint == nil { fingerprint = parsed }
        case "setup": setup = try setupValue(arg, line: line, number: number)
        case "ice-lite": iceLite = true
        case "end-of-candidates": endOfCandidates = true
        case "group":
            let tokens = arg.split(separator: " ")
            // Only the first BUNDLE group: the relay runs one transport.
            if bundle == nil, let semantics = tokens.first, semantics.uppercased() == "BUNDLE" {
                bundle = tokens.dropFirst().map(String.init)
            }
        default:
            if let d = SDPDirection(rawValue: String(name)) { direction = d }
        }
    }

    mutating func mediaAttribute(_ name: Substring, _ arg: Substring, line: Substring, number: Int) throws(MediaError) {
        // Taken out while edited, so its arrays stay uniquely referenced and are not copied per line.
        guard var s = current else { return }
        current = nil
        defer { current = s }
        switch name {
        case "mid":
            guard !arg.isEmpty, !arg.contains(" ") else { throw bad(number, line, "needs a single token as mid") }
            if s.media.mid == nil { s.media.mid = String(arg) }
        case "sendrecv", "sendonly", "recvonly", "inactive":
            s.media.direction = SDPDirection(rawValue: String(name)) ?? .sendrecv
            s.sawDirection = true
        case "rtcp-mux": s.media.rtcpMux = true
        case "rtcp-rsize": s.media.rtcpReducedSize = true
        case "bundle-only": s.media.bundleOnly = true
        case "end-of-candidates": s.media.endOfCandidates = true
        case "candidate": s.media.candidates.append("candidate:" + arg)
        case "msid": if s.media.msid == nil { s.media.msid = String(arg) }
        case "ice-ufrag": s.media.iceUfrag = try credential(arg, line: line, number: number)
        case "ice-pwd": s.media.icePwd = try credential(arg, line: line, number: number)
        case "fingerprint":
            let parsed = try fingerprintValue(arg, line: line, number: number)
            if s.media.fingerprint == nil { s.media.fingerprint = parsed }
        case "setup": s.media.setup = try setupValue(arg, line: line, number: number)
        case "extmap":
            let tokens = arg.split(separator: " ")
            guard tokens.count >= 2 else { throw bad(number, line, "needs an id and a URI") }
            let idText = tokens[0].split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false).first ?? tokens[0]
            // 1-14 fit the one-byte header form; up to 255 only the two-byte form (RFC 8285).
            guard let id: UInt8 = integer(idText, 1...255) else {
                throw bad(number, line, "has extension id \(quote(idText)), not 1-255")
            }
            s.media.extensions.append(SDPExtension(id: id, uri: String(tokens[1])))
        case "ssrc":
            let ssrcText = arg.split(separator: " ", maxSplits: 1).first ?? arg
            guard let ssrc: UInt32 = integer(ssrcText, 0...UInt32.max) else {
                throw bad(number, line, "has SSRC \(quote(ssrcText)), not a 32-bit number")
            }
            if s.seenSSRCs.insert(ssrc).inserted { s.ssrcs.append(ssrc) }
        case "ssrc-group":
            let tokens = arg.split(separator: " ")
            guard let semantics = tokens.first else { throw bad(number, line, "needs semantics and SSRCs") }
            var members: [UInt32] = []
            for token in tokens.dropFirst() {
                guard let ssrc: UInt32 = integer(token, 0...UInt32.max) else {
                    throw bad(number, line, "has SSRC \(quote(token)), not a 32-bit number")
                }
                members.append(ssrc)
            }
            // FID's second member is RTX and FEC-FR's is FEC: neither is a stream of its own. SIM
            // layers are all primary.
            if semantics == "FID" || semantics == "FEC-FR" { s.secondarySSRCs.formUnion(members.dropFirst()) }
        case "rtpmap" where s.isRTP:
            guard let (ptText, encoding) = cut(arg, at: UInt8(ascii: " ")) else { throw bad(number, line, "needs a payload type and an encoding") }
            let pt = try payloadType(ptText, line: line, number: number)
            let parts = trimmed(encoding).split(separator: "/", omittingEmptySubsequences: false)
            guard parts.count == 2 || parts.count == 3, !parts[0].isEmpty else {
                throw bad(number, line, "needs name/clock-rate[/channels]")
            }
            guard let clock = integer(parts[1], 1...10_000_000) else { throw bad(number, line, "has clock rate \(quote(parts[1]))") }
            var channels: Int?
            if parts.count == 3 {
                guard let c = integer(parts[2], 1...255) else { throw bad(number, line, "has channel count \(quote(parts[2]))") }
                channels = c
            }
            if s.rtpmaps[pt] == nil { s.rtpmaps[pt] = RTPMap(name: String(parts[0]), clockRate: clock, channels: channels) }
        case "fmtp" where s.isRTP:
            guard let (ptText, params) = cut(arg, at: UInt8(ascii: " ")) else { throw bad(number, line, "needs a payload type and parameters") }
            let pt = try payloadType(ptText, line: line, number: number)
            if s.fmtps[pt] == nil { s.fmtps[pt] = String(trimmed(params)) }
        case "rtcp-fb" where s.isRTP:
            guard let (ptText, rest) = cut(arg, at: UInt8(ascii: " ")) else { throw bad(number, line, "needs a payload type and a value") }
            let value = rest.split(separator: " ").joined(separator: " ")
            guard !value.isEmpty else { throw bad(number, line, "needs a feedback value") }
            if ptText == "*" {
                s.feedback.append((nil, value))
            } else {
                s.feedback.append((try payloadType(ptText, line: line, number: number), value))
            }
        default: return
        }
    }

    func finish() throws(MediaError) -> SessionDescription {
        guard sawVersion else { throw MediaError(.badSDP, "the SDP is empty") }
        var sections = finished
        if let current { sections.append(current) }
        let media = sections.map { $0.build(defaultDirection: direction) }

        var mids = Set<String>()
        for m in media {
            guard let mid = m.mid else { continue }
            guard mids.insert(mid).inserted else { throw MediaError(.badSDP, "two m-sections have a=mid:\(mid)") }
        }
        let bundle = bundle ?? []
        for mid in bundle where !mids.contains(mid) {
            throw MediaError(.badSDP, "a=group:BUNDLE names mid \(quote(mid)), which no m-section has")
        }
        let transport = bundle.first.flatMap { tag in media.first { $0.mid == tag } } ?? media.first

        guard let ufrag = transport?.iceUfrag ?? ufrag else {
            throw MediaError(.badSDP, "a=ice-ufrag is missing (needed at session level or in the first bundled m-section)")
        }
        guard let pwd = transport?.icePwd ?? pwd else {
            throw MediaError(.badSDP, "a=ice-pwd is missing (needed at session level or in the first bundled m-section)")
        }
        guard let fingerprint = transport?.fingerprint ?? fingerprint else {
            throw MediaError(.badSDP, "a=fingerprint is missing (needed at session level or in the first bundled m-section)")
        }
        return SessionDescription(
            media: media, bundle: bundle, iceUfrag: ufrag, icePwd: pwd, fingerprint: fingerprint,
            setup: transport?.setup ?? setup ?? .actpass, iceLite: iceLite,
            candidates: transport?.candidates ?? [],
            endOfCandidates: (transport?.endOfCandidates ?? false) || endOfCandidates)
    }

    private func credential(_ arg: Substring, line: Substring, number: Int) throws(MediaError) -> String {
        guard !arg.isEmpty, !arg.contains(" ") else { throw bad(number, line, "needs a single token") }
        return String(arg)
    }

    private func fingerprintValue(_ arg: Substring, line: Substring, number: Int) throws(MediaError) -> Fingerprint {
        guard let fingerprint = Fingerprint(sdpValue: arg) else {
            throw bad(number, line, "is not a fingerprint the relay can check (sha-1/256/384/512 and hex bytes)")
        }
        return fingerprint
    }

    private func setupValue(_ arg: Substring, line: Substring, number: Int) throws(MediaError) -> SDPSetup {
        guard let setup = SDPSetup(rawValue: arg.lowercased()) else { throw bad(number, line, "is not actpass, active or passive") }
        return setup
    }

    private func payloadType(_ text: Substring, line: Substring, number: Int) throws(MediaError) -> UInt8 {
        guard let pt: UInt8 = integer(text, 0...127) else { throw bad(number, line, "has payload type \(quote(text)), not 0-127") }
        return pt
    }

    private func bad(_ number: Int, _ line: Substring, _ problem: String) -> MediaError {
        MediaError(.badSDP, "line \(number) \(quote(line)) \(problem)")
    }
}

private func integer<T: FixedWidthInteger>(_ text: Substring, _ range: ClosedRange<T>) -> T? {
    guard let value = T(text, radix: 10), range.contains(value) else { return nil }
    return value
}

/// Quoted, cut short and with control characters masked: the text is the client's, and error
/// messages end up in logs.
private func quote(_ s: some StringProtocol) -> String {
    var out = "\""
    for (i, scalar) in s.unicodeScalars.enumerated() {
        if i == 60 {
            out += "…"
            break
        }
        out.unicodeScalars.append(scalar.value < 0x20 || scalar.value == 0x7F ? "?" : scalar)
    }
    return out + "\""
}

/// Splits at the first ASCII `separator`, found by byte so grapheme clustering cannot hide it.
private func cut(_ s: Substring, at separator: UInt8) -> (Substring, Substring)? {
    guard let i = s.utf8.firstIndex(of: separator) else { return nil }
    return (s[..<i], s[s.utf8.index(after: i)...])
}

private func trimmed(_ s: Substring) -> Substring {
    var s = s
    while let c = s.first, c == " " || c == "\t" { s.removeFirst() }
    return trimmedTrailing(s)
}

private func trimmedTrailing(_ s: Substring) -> Substring {
    var s = s
    while let c = s.last, c == " " || c == "\t" { s.removeLast() }
    return s
}

// MARK: - Answer

/// What the relay puts in its own side of the SDP.
public struct SDPLocalEndpoint: Sendable {
    public var iceUfrag: String
    public var icePwd: String
    public var fingerprint: Fingerprint
    /// Raw `candidate:…` values (no `a=`); empty while trickling.
    public var candidates: [String]
    public var cname: String
    public var streamID: String
    /// The relay's own sending SSRC per kind (it rewrites everything it forwards to these). A second
    /// section of the same kind sends with `ssrc &+ 1`, a third with `&+ 2`, and so on.
    public var audioSSRC: UInt32
    public var videoSSRC: UInt32
    public var sessionID: UInt64
    public var sessionVersion: UInt64

    public init(
        iceUfrag: String, icePwd: String, fingerprint: Fingerprint, candidates: [String] = [], cname: String,
        streamID: String, audioSSRC: UInt32, videoSSRC: UInt32, sessionID: UInt64, sessionVersion: UInt64
    ) {
        self.iceUfrag = iceUfrag
        self.icePwd = icePwd
        self.fingerprint = fingerprint
        self.candidates = candidates
        self.cname = cname
        self.streamID = streamID
        self.audioSSRC = audioSSRC
        self.videoSSRC = videoSSRC
        self.sessionID = sessionID
        self.sessionVersion = sessionVersion
    }
}

extension SDPLocalEndpoint {
    /// The lines that name what the relay sends in a section: its track and SSRC.
    func sendingLines(ssrc: UInt32, trackID: String) -> [String] {
        ["a=msid:\(streamID) \(trackID)", "a=ssrc:\(ssrc) cname:\(cname)", "a=ssrc:\(ssrc) msid:\(streamID) \(trackID)"]
    }
}

/// One accepted m-section as the relay will run it.
public struct NegotiatedMedia: Sendable, Equatable {
    public var mid: String
    public var kind: MediaKind
    /// The single codec chosen, with the offer's payload type and the feedback the answer kept.
    public var codec: SDPCodec
    /// The relay's direction (answer side).
    public var direction: SDPDirection
    /// Accepted header extensions, with the offer's ids.
    public var extensions: [SDPExtension]
    /// The client's primary SSRC, if it signalled one.
    public var remoteSSRC: UInt32?
    public var localSSRC: UInt32
    public var rtcpReducedSize: Bool

    public init(
        mid: String, kind: MediaKind, codec: SDPCodec, direction: SDPDirection, extensions: [SDPExtension],
        remoteSSRC: UInt32?, localSSRC: UInt32, rtcpReducedSize: Bool
    ) {
        self.mid = mid
        self.kind = kind
        self.codec = codec
        self.direction = direction
        self.extensions = extensions
        self.remoteSSRC = remoteSSRC
        self.localSSRC = localSSRC
        self.rtcpReducedSize = rtcpReducedSize
    }
}

/// Which end of the DTLS handshake a leg plays (SDP `a=setup`: `active` is the client).
public enum DTLSRole: Sendable, Equatable {
    case client, server
}

/// The relay's answer: its text, the accepted sections in offer order, and its DTLS role.
public struct SDPAnswer: Sendable, Equatable {
    public var sdp: String
    public var media: [NegotiatedMedia]
    public var dtlsRole: DTLSRole
}

extension SessionDescription {
    static let videoFeedback = ["nack", "nack pli", "ccm fir", "goog-remb", "transport-cc"]
    static let audioFeedback = ["transport-cc"]

    /// The relay's answer to this offer: one codec per audio/video section, everything else rejected
    /// (port 0). Throws `bad_sdp` when the offer cannot share one BUNDLE transport with rtcp-mux, and
    /// `no_common_codec` when no audio or video section is usable.
    public func answer(_ local: SDPLocalEndpoint) throws(MediaError) -> SDPAnswer {
        for (index, m) in media.enumerated() where m.mid == nil {
            throw MediaError(.badSDP, "m-section \(index) (\(quote(m.kind))) has no a=mid, which BUNDLE requires")
        }
        var plans: [(kind: MediaKind, codec: SDPCodec)?] = []
        for m in media { plans.append(acceptance(of: m)) }
        let accepted = media.indices.filter { plans[$0] != nil }
        guard !accepted.isEmpty else {
            throw MediaError(.noCommonCodec, "no audio or video section offers a codec the relay supports (opus/48000/2; VP8 or H264 packetization-mode=1)")
        }
        for i in accepted {
            let mid = media[i].mid ?? ""
            if accepted.count > 1 && !bundle.contains(mid) {
                throw MediaError(.badSDP, "the relay requires BUNDLE and rtcp-mux: mid \(quote(mid)) is not in a=group:BUNDLE")
            }
            if !media[i].rtcpMux {
                throw MediaError(.badSDP, "the relay requires BUNDLE and rtcp-mux: mid \(quote(mid)) has no a=rtcp-mux")
            }
        }

        // The offerer's passive leaves us the client; actpass (and active) make the relay the server.
        let (setupLine, role): (String, DTLSRole) = setup == .passive ? ("active", .client) : ("passive", .server)
        var kindCount: [MediaKind: Int] = [:]
        for i in accepted { if let plan = plans[i] { kindCount[plan.kind, default: 0] += 1 } }

        var lines = [
            "v=0",
            "o=- \(local.sessionID) \(local.sessionVersion) IN IP4 0.0.0.0",
            "s=-",
            "t=0 0",
            "a=group:BUNDLE " + accepted.map { media[$0].mid ?? "" }.joined(separator: " "),
            "a=msid-semantic: WMS \(local.streamID)",
        ]
        var negotiated: [NegotiatedMedia] = []
        var ordinal: [MediaKind: UInt32] = [:]
        for (index, m) in media.enumerated() {
            let mid = m.mid ?? ""
            guard let plan = plans[index] else {
                lines += ["m=\(m.kind) 0 \(m.proto) \(m.formats.first ?? "0")", "c=IN IP4 0.0.0.0", "a=mid:\(mid)"]
                continue
            }
            let kind = plan.kind
            var codec = plan.codec
            let allowedFeedback = kind == .video ? Self.videoFeedback : Self.audioFeedback
            codec.feedback = codec.feedback.filter { allowedFeedback.contains($0) }
            var extensions: [SDPExtension] = []
            for ext in m.extensions {
                // The relay writes one-byte header extensions (RFC 8285), which cannot carry ids above 14.
                guard let known = RTPHeaderExtension(rawValue: ext.uri), known.applies(to: kind), ext.id <= 14,
                      !extensions.contains(where: { $0.uri == ext.uri || $0.id == ext.id })
                else { continue }
                extensions.append(ext)
            }
            let n = ordinal[kind, default: 0]
            ordinal[kind] = n + 1
            let localSSRC = (kind == .audio ? local.audioSSRC : local.videoSSRC) &+ n
            let trackID = kindCount[kind, default: 0] > 1
                ? "\(local.streamID)-\(kind.rawValue)-\(mid)" : "\(local.streamID)-\(kind.rawValue)"
            let direction = m.direction.reversed
            let proto = m.proto == "UDP/TLS/RTP/SAVPF" || m.proto == "TCP/DTLS/RTP/SAVPF" ? m.proto : "UDP/TLS/RTP/SAVPF"
            let pt = codec.payloadType

            lines += [
                "m=\(kind.rawValue) 9 \(proto) \(pt)",
                "c=IN IP4 0.0.0.0",
                "a=rtcp:9 IN IP4 0.0.0.0",
                "a=ice-ufrag:\(local.iceUfrag)",
                "a=ice-pwd:\(local.icePwd)",
                "a=ice-options:trickle",
                "a=fingerprint:\(local.fingerprint.description)",
                "a=setup:\(setupLine)",
                "a=mid:\(mid)",
            ]
            lines += extensions.map { "a=extmap:\($0.id) \($0.uri)" }
            lines += ["a=\(direction.rawValue)", "a=rtcp-mux"]
            if m.rtcpReducedSize { lines.append("a=rtcp-rsize") }
            lines += Self.codecLines(codec)
            if direction.sends { lines += local.sendingLines(ssrc: localSSRC, trackID: trackID) }
            // Every bundled section repeats the transport's candidates: a client may read them from any
            // (aiortc takes the last section's for its bundled transport).
            if !local.candidates.isEmpty {
                lines += local.candidates.map { "a=" + $0 }
                lines.append("a=end-of-candidates")
            }
            negotiated.append(NegotiatedMedia(
                mid: mid, kind: kind, codec: codec, direction: direction, extensions: extensions,
                remoteSSRC: m.ssrcs.first, localSSRC: localSSRC, rtcpReducedSize: m.rtcpReducedSize))
        }
        return SDPAnswer(sdp: lines.joined(separator: "\r\n") + "\r\n", media: negotiated, dtlsRole: role)
    }

    /// The section's kind and chosen codec if the relay accepts it, nil if it is rejected.
    private func acceptance(of m: SDPMedia) -> (kind: MediaKind, codec: SDPCodec)? {
        guard let kind = MediaKind(rawValue: m.kind), m.proto.contains("SAVP") else { return nil }
        guard m.port != 0 || (m.bundleOnly && bundle.contains(m.mid ?? "")) else { return nil }
        guard let codec = Self.choose(kind, from: m.codecs) else { return nil }
        return (kind, codec)
    }

    /// opus for audio; VP8 for video, else the most widely decodable H264 (packetization-mode=1,
    /// 42e01f first, then other baseline profiles). The offer's order breaks ties.
    static func choose(_ kind: MediaKind, from codecs: [SDPCodec]) -> SDPCodec? {
        switch kind {
        case .audio:
            return codecs.first { $0.name.lowercased() == "opus" && $0.clockRate == 48000 && $0.channels == 2 }
        case .video:
            if let vp8 = codecs.first(where: { $0.name.lowercased() == "vp8" && $0.clockRate == 90000 }) { return vp8 }
            var best: (rank: Int, codec: SDPCodec)?
            for c in codecs where c.name.lowercased() == "h264" && c.clockRate == 90000 && c.parameter("packetization-mode") == "1" {
                // RFC 6184's default profile-level-id is 42000a (baseline).
                let profile = c.parameter("profile-level-id")?.lowercased() ?? "42000a"
                let rank = profile == "42e01f" ? 0 : profile.hasPrefix("42") ? 1 : 2
                if rank < best?.rank ?? Int.max { best = (rank, c) }
            }
            return best?.codec
        }
    }
}
