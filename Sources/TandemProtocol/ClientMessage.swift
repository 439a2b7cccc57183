/// Limits on what a client may send, from PROTOCOL.md.
public enum ProtocolLimits {
    /// Largest frame or message, in bytes (close 1009 beyond it).
    public static let maxMessageBytes = 64 * 1024
    /// Largest `device` object in a `join`, in bytes of JSON.
    public static let maxDeviceBytes = 1024
    /// Longest display name, in bytes.
    public static let maxNameBytes = 256
}

public enum SignalKind: String, Sendable, CaseIterable {
    case offer, answer, candidate
    case endOfCandidates = "end-of-candidates"
    case restart
}

public enum MediaState: String, Sendable, CaseIterable {
    case new, connecting, connected, failed, closed
}

public enum CandidateType: String, Sendable, CaseIterable {
    case host, srflx, prflx, relay
}

/// The `resume` member of a `join`.
public struct ResumeRequest: Sendable, Equatable {
    public var participant: ParticipantID
    public var key: String
    public var lastSeq: Int
}

public struct JoinRequest: Sendable, Equatable {
    public var session: SessionID
    public var token: String?
    public var name: String?
    /// The providers the client can use, in no particular order; `nil` means all.
    public var providers: Set<ProviderName>?
    /// The `device` object as sent, if any.
    public var device: [UInt8]?
    public var resume: ResumeRequest?
}

public struct SignalRequest: Sendable, Equatable {
    public var to: ParticipantID
    public var kind: SignalKind
    public var epoch: Int
    /// The `data` object exactly as sent, relayed verbatim.
    public var rawData: [UInt8]
    /// The parsed `data` object (for the server's own endpoint).
    public var data: JSON
}

/// A `health` report. Metrics are optional; each is a finite non-negative number.
public struct HealthReport: Sendable, Equatable {
    public var epoch: Int
    public var provider: ProviderName
    public var media: MediaState
    public var rttMs: Double?
    public var lossPct: Double?
    public var jitterMs: Double?
    public var bitrateKbps: Double?
    public var frameHeight: Int?
    public var candidateType: CandidateType?

    public init(
        epoch: Int, provider: ProviderName, media: MediaState, rttMs: Double? = nil, lossPct: Double? = nil,
        jitterMs: Double? = nil, bitrateKbps: Double? = nil, frameHeight: Int? = nil, candidateType: CandidateType? = nil
    ) {
        self.epoch = epoch
        self.provider = provider
        self.media = media
        self.rttMs = rttMs
        self.lossPct = lossPct
        self.jitterMs = jitterMs
        self.bitrateKbps = bitrateKbps
        self.frameHeight = frameHeight
        self.candidateType = candidateType
    }
}

/// A message from a client, validated.
public enum ClientMessage: Sendable, Equatable {
    case join(JoinRequest)
    case signal(SignalRequest)
    case health(HealthReport)
    /// `ping` with the exact text of its `t`, echoed in `pong`.
    case ping(t: [UInt8])
    case leave

    public var type: String {
        switch self {
        case .join: "join"
        case .signal: "signal"
        case .health: "health"
        case .ping: "ping"
        case .leave: "leave"
        }
    }

    /// Decodes and validates one text frame. Errors carry the code to answer with and, when the type is
    /// known, the `ref`.
    public static func decode(_ bytes: [UInt8]) throws(ProtocolError) -> ClientMessage {
        let doc: JSONDocument
        do {
            doc = try JSONParser.parseDocument(bytes)
        } catch {
            throw ProtocolError(.badMessage, error.description)
        }
        guard let type = doc["type"]?.stringValue else {
            throw ProtocolError(.badMessage, "a message must be an object with a string \"type\"")
        }
        do throws(ProtocolError) {
            switch type {
            case "join": return .join(try decodeJoin(doc))
            case "signal": return .signal(try decodeSignal(doc))
            case "health": return .health(try decodeHealth(doc))
            case "ping":
                guard doc["t"]?.doubleValue != nil, let raw = doc.raw("t") else {
                    throw ProtocolError(.badMessage, "ping needs a number \"t\"")
                }
                return .ping(t: Array(raw))
            case "leave": return .leave
            default:
                throw ProtocolError(.unknownType, "unknown message type \"\(type.prefix(64))\"")
            }
        } catch {
            throw error.with(ref: error.code == .unknownType ? String(type.prefix(64)) : type)
        }
    }

    private static func decodeJoin(_ doc: JSONDocument) throws(ProtocolError) -> JoinRequest {
        guard let raw = doc["session"]?.stringValue else { throw ProtocolError(.badMessage, "join needs a string \"session\"") }
        guard let session = SessionID(raw) else {
            throw ProtocolError(.badMessage, "session id must be 1 to 128 characters of [A-Za-z0-9_-]")
        }
        var join = JoinRequest(session: session)
        join.token = try optionalString(doc["token"], "token")
        if let name = try optionalString(doc["name"], "name") {
            guard name.utf8.count <= ProtocolLimits.maxNameBytes else {
                throw ProtocolError(.badMessage, "name is longer than \(ProtocolLimits.maxNameBytes) bytes")
            }
            join.name = name
        }
        if let providers = doc["providers"], providers != .null {
            guard case .array(let list) = providers, !list.isEmpty else {
                throw ProtocolError(.badMessage, "providers must be a non-empty array of \"p2p\", \"relay\", \"sfu\"")
            }
            var set = Set<ProviderName>()
            for item in list {
                guard let name = item.stringValue.flatMap(ProviderName.init(rawValue:)) else {
                    throw ProtocolError(.badMessage, "providers must be a non-empty array of \"p2p\", \"relay\", \"sfu\"")
                }
                set.insert(name)
            }
            join.providers = set
        }
        if let device = doc["device"], device != .null {
            guard device.isObject, let raw = doc.raw("device") else { throw ProtocolError(.badMessage, "device must be an object") }
            guard raw.count <= ProtocolLimits.maxDeviceBytes else {
                throw ProtocolError(.tooLarge, "device is larger than \(ProtocolLimits.maxDeviceBytes) bytes")
            }
            join.device = Array(raw)
        }
        if let resume = doc["resume"], resume != .null {
            guard let participant = resume["participant"]?.stringValue, let key = resume["key"]?.stringValue,
                let lastSeq = resume["lastSeq"]?.intValue, lastSeq >= 0
            else {
                throw ProtocolError(.badMessage, "resume needs {participant, key, lastSeq}")
            }
            join.resume = ResumeRequest(participant: ParticipantID(participant), key: key, lastSeq: lastSeq)
        }
        return join
    }

    private static func decodeSignal(_ doc: JSONDocument) throws(ProtocolError) -> SignalRequest {
        guard let to = doc["to"]?.stringValue, !to.isEmpty else { throw ProtocolError(.badMessage, "signal needs a string \"to\"") }
        guard let data = doc["data"], data.isObject, let raw = doc.raw("data") else {
            throw ProtocolError(.badMessage, "signal needs a \"data\" object")
        }
        guard let kind = data["kind"]?.stringValue.flatMap(SignalKind.init(rawValue:)) else {
            throw ProtocolError(.badMessage, "data.kind must be offer, answer, candidate, end-of-candidates or restart")
        }
        guard let epoch = data["epoch"]?.intValue, epoch >= 0 else {
            throw ProtocolError(.badMessage, "data.epoch must be a non-negative integer")
        }
        switch kind {
        case .offer, .answer:
            guard data["sdp"]?.stringValue != nil else { throw ProtocolError(.badMessage, "an \(kind.rawValue) needs a string data.sdp") }
        case .candidate:
            guard let c = data["candidate"], c != .null else { throw ProtocolError(.badMessage, "a candidate needs data.candidate") }
        case .endOfCandidates, .restart:
            break
        }
        return SignalRequest(to: ParticipantID(to), kind: kind, epoch: epoch, rawData: Array(raw), data: data)
    }

    private static func decodeHealth(_ doc: JSONDocument) throws(ProtocolError) -> HealthReport {
        guard let epoch = doc["epoch"]?.intValue, epoch >= 0 else {
            throw ProtocolError(.badMessage, "health needs a non-negative integer \"epoch\"")
        }
        guard let provider = doc["provider"]?.stringValue.flatMap(ProviderName.init(rawValue:)) else {
            throw ProtocolError(.badMessage, "health needs \"provider\": p2p, relay or sfu")
        }
        guard let media = doc["media"]?.stringValue.flatMap(MediaState.init(rawValue:)) else {
            throw ProtocolError(.badMessage, "health needs \"media\": new, connecting, connected, failed or closed")
        }
        var report = HealthReport(epoch: epoch, provider: provider, media: media)
        report.rttMs = try metric(doc, "rttMs")
        report.lossPct = try metric(doc, "lossPct", max: 100)
        report.jitterMs = try metric(doc, "jitterMs")
        report.bitrateKbps = try metric(doc, "bitrateKbps")
        if let h = try metric(doc, "frameHeight", max: 100_000) { report.frameHeight = Int(h) }
        if let c = doc["candidateType"], c != .null {
            guard let type = c.stringValue.flatMap(CandidateType.init(rawValue:)) else {
                throw ProtocolError(.badMessage, "candidateType must be host, srflx, prflx or relay")
            }
            report.candidateType = type
        }
        return report
    }

    private static func metric(_ doc: JSONDocument, _ name: String, max: Double = 1e9) throws(ProtocolError) -> Double? {
        guard let value = doc[name], value != .null else { return nil }
        guard let d = value.doubleValue, d >= 0, d <= max else {
            throw ProtocolError(.badMessage, "\(name) must be a number from 0 to \(Int(max))")
        }
        return d
    }

    private static func optionalString(_ value: JSON?, _ name: String) throws(ProtocolError) -> String? {
        guard let value, value != .null else { return nil }
        guard let s = value.stringValue else { throw ProtocolError(.badMessage, "\(name) must be a string") }
        return s
    }
}

extension JoinRequest {
    public init(session: SessionID) {
        self.session = session
    }
}
