import TandemMediaCore
import Synchronization

/// How the relay is set up: where it gathers, how many loop threads, how long a leg may take to connect.
public struct RelayConfiguration: Sendable, Equatable {
    /// Host addresses the relay's ICE agents gather on (`--relay-address`).
    public var ice: ICEConfiguration
    /// GLib loop threads (about one per core).
    public var loops: Int
    /// A leg not connected (ICE + DTLS) this long after its offer has failed.
    public var handshakeTimeoutMs: Int
    /// How often connected legs report their figures.
    public var statsIntervalMs: Int

    public init(ice: ICEConfiguration, loops: Int, handshakeTimeoutMs: Int = 20_000, statsIntervalMs: Int = 2_000) {
        self.ice = ice
        self.loops = loops
        self.handshakeTimeoutMs = handshakeTimeoutMs
        self.statsIntervalMs = statsIntervalMs
    }
}

/// A signal from a participant to the relay (`to: "server"`), already unpacked from its JSON.
public enum RelayInput: Sendable, Equatable {
    case offer(sdp: String)
    case answer(sdp: String)
    case candidate(String)
    case endOfCandidates
}

/// What the relay tells the signaling layer, from its loop thread.
public enum RelayOutput: Sendable, Equatable {
    case answer(participant: String, epoch: Int, sdp: String)
    /// The relay renegotiates (it sends a kind of media the participant's offer lacked).
    case offer(participant: String, epoch: Int, sdp: String)
    /// A local candidate for the participant's leg (`candidate:…`), with the bundle's mid and that
    /// section's index among the offer's m-lines.
    case candidate(participant: String, epoch: Int, candidate: String, mid: String, mLineIndex: Int)
    case endOfCandidates(participant: String, epoch: Int)
    /// The participant's signal could not be used (malformed SDP, no common codec…).
    case rejected(participant: String, epoch: Int, MediaError)
    /// The server's view of the participant's media on this epoch: connected, or failed with why.
    case media(participant: String, epoch: Int, connected: Bool, error: MediaError?)
    /// A connected leg's figures, every `statsIntervalMs`.
    case stats(participant: String, epoch: Int, RelayLegStats)

    /// Whose leg said it, and for which epoch.
    public var leg: (participant: String, epoch: Int) {
        switch self {
        case let .answer(participant, epoch, _), let .offer(participant, epoch, _), let .candidate(participant, epoch, _, _, _),
            let .endOfCandidates(participant, epoch), let .rejected(participant, epoch, _), let .media(participant, epoch, _, _),
            let .stats(participant, epoch, _):
            (participant, epoch)
        }
    }
}

/// What the relay knows of one participant's leg: its traffic, and from the participant's RTCP receiver
/// reports the loss and jitter of what the relay sends it, and the round trip between them.
public struct RelayLegStats: Sendable, Equatable, Codable {
    public var packetsIn = 0
    public var bytesIn = 0
    public var packetsOut = 0
    public var bytesOut = 0
    /// Fraction of the relay's packets lost on the way to the participant, in percent (last report).
    public var lossPct: Double?
    public var jitterMs: Double?
    /// From the participant's report of a sender report the relay forwarded to it (LSR/DLSR).
    public var rttMs: Double?

    public init() {}
}

/// Process-wide relay counters, read by `/metrics`. Relaxed atomics: a few nanoseconds per packet.
public final class RelayCounters: Sendable {
    public let packetsIn = Atomic<Int>(0)
    public let bytesIn = Atomic<Int>(0)
    public let packetsOut = Atomic<Int>(0)
    public let bytesOut = Atomic<Int>(0)
    /// Packets that could not be forwarded: no connected peer leg, failed SRTP, unknown payload type.
    public let dropped = Atomic<Int>(0)
    public let legsOpen = Atomic<Int>(0)
    public let legsConnected = Atomic<Int>(0)
    public let legsFailed = Atomic<Int>(0)
    public let keyframeRequests = Atomic<Int>(0)
    /// Packets re-sent from the relay's own history in answer to a NACK.
    public let retransmissions = Atomic<Int>(0)
    /// Sequence numbers NACKed by participants (answered or forwarded).
    public let nacks = Atomic<Int>(0)

    init() {}

    @inline(__always) func add(_ counter: borrowing Atomic<Int>, _ n: Int) {
        counter.add(n, ordering: .relaxed)
    }
}

/// The server's media endpoint (peer `server`): one `RelaySession` per session on relay, its legs on one
/// loop thread of a fixed pool.
public final class MediaRelay: Sendable {
    public let configuration: RelayConfiguration
    public let identity: DTLSIdentity
    public let counters = RelayCounters()
    let pool: MediaLoopPool

    public init(configuration: RelayConfiguration, identity: DTLSIdentity) {
        self.configuration = configuration
        self.identity = identity
        pool = MediaLoopPool(threads: configuration.loops)
    }

    /// Opens the relay for `session` at `epoch`; `sink` hears everything its legs say.
    public func open(session: String, epoch: Int, sink: @escaping @Sendable (RelayOutput) -> Void) -> RelaySessionHandle {
        let loop = pool.loop(for: session)
        return RelaySessionHandle(loop: loop, session: RelaySession(relay: self, loop: loop, epoch: epoch, sink: sink))
    }

    /// The relay's loop threads (for measuring them; work is posted through session handles).
    public var loops: [MediaLoop] { pool.loops }

    public func shutdown() {
        pool.shutdown()
    }

    /// Sessions hold their relay, so this runs once none is left: the loop threads end with it.
    deinit {
        pool.shutdown()
    }
}

/// The signaling side's handle on one session's relay: every call is posted to the session's loop.
public final class RelaySessionHandle: Sendable {
    public let loop: MediaLoop
    private let session: RelaySession

    init(loop: MediaLoop, session: RelaySession) {
        self.loop = loop
        self.session = session
    }

    public var epoch: Int { session.epoch }

    /// A handle dropped without `close()` (its room went away) still tears its legs down.
    deinit {
        close()
    }

    public func signal(from participant: String, _ input: RelayInput) {
        let session = session
        loop.execute { session.receive(participant, input) }
    }

    /// The participant left the session (or timed out): its leg goes.
    public func remove(_ participant: String) {
        let session = session
        loop.execute { session.remove(participant) }
    }

    /// The session left the relay (switch, end): every leg goes.
    public func close() {
        let session = session
        loop.execute { session.close() }
    }
}

/// One session's legs, confined to its loop.
final class RelaySession: @unchecked Sendable {
    let relay: MediaRelay
    let loop: MediaLoop
    let epoch: Int
    let sink: @Sendable (RelayOutput) -> Void
    private(set) var legs: [String: RelayLeg] = [:]
    private var closed = false

    init(relay: MediaRelay, loop: MediaLoop, epoch: Int, sink: @escaping @Sendable (RelayOutput) -> Void) {
        self.relay = relay
        self.loop = loop
        self.epoch = epoch
        self.sink = sink
        loop.execute { [self] in scheduleStats() }
    }

    private var statsTimer: LoopTimer?

    private func scheduleStats() {
        guard !closed else { return }
        statsTimer = loop.schedule(afterMs: relay.configuration.statsIntervalMs) { [self] in
            for leg in legs.values {
                if let stats = leg.stats { sink(.stats(participant: leg.participant, epoch: epoch, stats)) }
            }
            scheduleStats()
        }
    }

    func receive(_ participant: String, _ input: RelayInput) {
        guard !closed else { return }
        guard case .offer(let sdp) = input else {
            // Candidates that outrun their offer are not expected (the offer is sent first on one socket).
            legs[participant]?.receive(input)
            return
        }
        let offer: SessionDescription
        do {
            offer = try SessionDescription.parse(sdp)
        } catch {
            return sink(.rejected(participant: participant, epoch: epoch, error))
        }
        if let leg = legs[participant] {
            guard leg.isNewTransport(offer) else { return leg.offer(offer) }
            // A new peer connection from the same participant: a new leg for it.
            leg.close()
        }
        guard legs.count < 2 else {
            sink(.rejected(participant: participant, epoch: epoch, MediaError(.unavailable, "the relay carries two participants per session")))
            return
        }
        let leg = RelayLeg(participant: participant, session: self)
        legs[participant] = leg
        relay.counters.add(relay.counters.legsOpen, 1)
        leg.offer(offer)
        // An offer that could not be answered leaves no leg behind to hold the participant's place.
        if leg.isAwaitingOffer { leg.close() }
    }

    /// The other participant's leg, if any.
    func peer(of leg: RelayLeg) -> RelayLeg? {
        legs.values.first { $0 !== leg }
    }

    /// A leg learned its negotiated media: both directions' outgoing streams are (re)configured.
    func negotiated(_ leg: RelayLeg) {
        guard let other = peer(of: leg) else { return }
        leg.configureOutgoing(from: other)
        other.configureOutgoing(from: leg)
        leg.offerMissingKinds(from: other)
        other.offerMissingKinds(from: leg)
    }

    func legEnded(_ leg: RelayLeg) {
        if legs[leg.participant] === leg {
            legs[leg.participant] = nil
            relay.counters.add(relay.counters.legsOpen, -1)
        }
    }

    func remove(_ participant: String) {
        legs[participant]?.close()
    }

    func close() {
        guard !closed else { return }
        closed = true
        statsTimer?.cancel()
        statsTimer = nil
        for leg in Array(legs.values) { leg.close() }
    }
}
