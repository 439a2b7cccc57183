public enum SwitchReason: String, Sendable, CaseIterable {
    case failure, quality, join, admin
}

public enum LeaveReason: String, Sendable, CaseIterable {
    case left, timeout, replaced, kicked
}

public enum PeerConnectionState: String, Sendable {
    case reconnecting, active
}

public enum QualityLevel: String, Sendable, CaseIterable, Comparable {
    case lost, poor, good, excellent

    public static func < (a: Self, b: Self) -> Bool { a.rank < b.rank }
    var rank: Int {
        switch self {
        case .lost: 0
        case .poor: 1
        case .good: 2
        case .excellent: 3
        }
    }
}

public enum AlertKind: String, Sendable, CaseIterable {
    case highLatency = "high_latency"
    case packetLoss = "packet_loss"
    case lowBandwidth = "low_bandwidth"
    case stalePeer = "stale_peer"
    /// An addition to PROTOCOL.md: reported jitter past its alert threshold.
    case highJitter = "high_jitter"
    /// An addition to PROTOCOL.md: the session should have moved to the SFU but the SFU service failed;
    /// `value` is the HTTP status it answered (0 when it did not answer) and `detail` says why.
    case sfuUnavailable = "sfu_unavailable"
    /// An addition to PROTOCOL.md: the session's failure switches reached their limit, so it stays on its
    /// provider; `value` is the limit.
    case switchLimit = "switch_limit"
}

public struct ICEServer: Sendable, Equatable {
    public var urls: [String]
    public var username: String?
    public var credential: String?

    public init(urls: [String], username: String? = nil, credential: String? = nil) {
        self.urls = urls
        self.username = username
        self.credential = credential
    }
}

/// Where an SFU session's media goes, for the app's SFU SDK.
public struct SFUAccess: Sendable, Equatable {
    public var provider: String
    public var url: String
    public var token: String

    public init(provider: String, url: String, token: String) {
        self.provider = provider
        self.url = url
        self.token = token
    }
}

/// The provider object of `welcome` and `provider` messages, as one participant sees it.
public struct ProviderInfo: Sendable, Equatable {
    public var name: ProviderName
    public var epoch: Int
    public var room: SessionID
    public var polite: Bool
    public var iceServers: [ICEServer]
    public var sfu: SFUAccess?

    public init(name: ProviderName, epoch: Int, room: SessionID, polite: Bool, iceServers: [ICEServer] = [], sfu: SFUAccess? = nil) {
        self.name = name
        self.epoch = epoch
        self.room = room
        self.polite = polite
        self.iceServers = iceServers
        self.sfu = sfu
    }
}

public struct PeerInfo: Sendable, Equatable {
    public var id: ParticipantID
    public var name: String?

    public init(id: ParticipantID, name: String?) {
        self.id = id
        self.name = name
    }
}

/// A message from the server. `seq` is added when it is framed for one participant.
public enum ServerMessage: Sendable, Equatable {
    case welcome(
        session: SessionID, participant: ParticipantID, resumeKey: String, peers: [PeerInfo], provider: ProviderInfo,
        heartbeatIntervalMs: Int, heartbeatTimeoutMs: Int, serverVersion: String, node: String, resumed: Bool)
    case peerJoined(PeerInfo)
    case peerState(peer: ParticipantID, state: PeerConnectionState)
    case peerLeft(peer: ParticipantID, reason: LeaveReason)
    case signal(from: ParticipantID, rawData: [UInt8])
    case provider(ProviderInfo, reason: SwitchReason, previous: ProviderName?)
    case quality(participant: ParticipantID, score: Int, level: QualityLevel)
    case video(maxHeight: Int, reason: String)
    case alert(kind: AlertKind, participant: ParticipantID, value: Double, detail: String? = nil)
    case pong(t: [UInt8])
    case error(ProtocolError)

    public var type: String {
        switch self {
        case .welcome: "welcome"
        case .peerJoined: "peer-joined"
        case .peerState: "peer-state"
        case .peerLeft: "peer-left"
        case .signal: "signal"
        case .provider: "provider"
        case .quality: "quality"
        case .video: "video"
        case .alert: "alert"
        case .pong: "pong"
        case .error: "error"
        }
    }

    /// The complete JSON text of this message for the participant whose next sequence number is `seq`.
    public func encoded(seq: Int) -> [UInt8] {
        // A signal carries an SDP of a few kilobytes: room for it up front instead of regrowing.
        let capacity = if case .signal(_, let rawData) = self { rawData.count + 96 } else { 128 }
        var w = JSONWriter(capacity: capacity)
        w.beginObject()
        w.member("seq", seq)
        w.member("type", type)
        switch self {
        case let .welcome(session, participant, resumeKey, peers, provider, interval, timeout, version, node, resumed):
            w.member("session", session.rawValue)
            w.member("participant", participant.rawValue)
            w.member("resumeKey", resumeKey)
            w.key("peers")
            w.beginArray()
            for peer in peers { Self.write(peer, &w) }
            w.endArray()
            w.key("provider")
            Self.write(provider, &w)
            w.key("heartbeat")
            w.beginObject()
            w.member("intervalMs", interval)
            w.member("timeoutMs", timeout)
            w.endObject()
            w.key("server")
            w.beginObject()
            w.member("version", version)
            w.member("node", node)
            w.endObject()
            w.member("resumed", resumed)
        case .peerJoined(let peer):
            w.key("peer")
            Self.write(peer, &w)
        case let .peerState(peer, state):
            w.member("peer", peer.rawValue)
            w.member("state", state.rawValue)
        case let .peerLeft(peer, reason):
            w.member("peer", peer.rawValue)
            w.member("reason", reason.rawValue)
        case let .signal(from, rawData):
            w.member("from", from.rawValue)
            w.key("data")
            w.raw(rawData)
        case let .provider(info, reason, previous):
            Self.writeProviderFields(info, &w)
            w.member("reason", reason.rawValue)
            w.key("previous")
            if let previous { w.string(previous.rawValue) } else { w.null() }
        case let .quality(participant, score, level):
            w.member("participant", participant.rawValue)
            w.member("score", score)
            w.member("level", level.rawValue)
        case let .video(maxHeight, reason):
            w.member("maxHeight", maxHeight)
            w.member("reason", reason)
        case let .alert(kind, participant, value, detail):
            w.member("kind", kind.rawValue)
            w.member("participant", participant.rawValue)
            w.member("value", value)
            if let detail { w.member("detail", detail) }
        case .pong(let t):
            w.key("t")
            w.raw(t)
        case .error(let error):
            w.member("code", error.code.rawValue)
            w.member("message", error.message)
            if let ref = error.ref { w.member("ref", ref) }
        }
        w.endObject()
        return w.bytes
    }

    static func write(_ peer: PeerInfo, _ w: inout JSONWriter) {
        w.beginObject()
        w.member("id", peer.id.rawValue)
        w.key("name")
        if let name = peer.name { w.string(name) } else { w.null() }
        w.endObject()
    }

    static func write(_ info: ProviderInfo, _ w: inout JSONWriter) {
        w.beginObject()
        writeProviderFields(info, &w)
        w.endObject()
    }

    static func writeProviderFields(_ info: ProviderInfo, _ w: inout JSONWriter) {
        w.member("name", info.name.rawValue)
        w.member("epoch", info.epoch)
        w.member("room", info.room.rawValue)
        w.member("polite", info.polite)
        w.key("iceServers")
        w.beginArray()
        for server in info.iceServers {
            w.beginObject()
            w.key("urls")
            w.beginArray()
            for url in server.urls { w.string(url) }
            w.endArray()
            if let username = server.username { w.member("username", username) }
            if let credential = server.credential { w.member("credential", credential) }
            w.endObject()
        }
        w.endArray()
        if let sfu = info.sfu {
            w.key("sfu")
            w.beginObject()
            w.member("provider", sfu.provider)
            w.member("url", sfu.url)
            w.member("token", sfu.token)
            w.endObject()
        }
    }
}
