/// The lifecycle of one relay leg (one participant's ICE + DTLS-SRTP connection to the relay), as a
/// value type: events in, actions out. The I/O layer (`RelayLeg`) performs the actions.
public struct RelayLegMachine: Sendable, Equatable {
    public enum State: Sendable, Equatable {
        /// Made for the relay epoch; the client's offer has not come.
        case awaitingOffer
        /// Answered; ICE checks and the DTLS handshake are under way.
        case connecting(iceConnected: Bool)
        /// DTLS done, SRTP keyed: media flows.
        case connected
        case failed(MediaError)
        case closed
    }

    public enum Event: Sendable, Equatable {
        case offer
        case badOffer(MediaError)
        case iceConnected
        case iceFailed
        case dtlsConnected
        case dtlsFailed(MediaError)
        case handshakeTimeout
        /// The participant sent close_notify: it closed its peer connection (leaving, or moving on).
        case peerClosed
        case close
    }

    public enum Action: Sendable, Equatable {
        /// Send the answer to the offer just parsed.
        case answer
        /// Tell the client its offer cannot be used; the leg stays as it was.
        case reject(MediaError)
        case armHandshakeTimer
        case cancelHandshakeTimer
        /// Start the DTLS handshake (a client sends its first flight; a server waits for the client's).
        case startDTLS
        /// Ask the other leg's sender for a keyframe for this one.
        case requestKeyframe
        /// Report the server's view of this participant's media for the epoch: connected, or failed why.
        case report(MediaError?)
        /// Close the agent, send close_notify, release SRTP (off the packet path).
        case teardown
    }

    public private(set) var state: State = .awaitingOffer

    public init() {}

    public var isConnected: Bool { state == .connected }

    public mutating func handle(_ event: Event) -> [Action] {
        switch (state, event) {
        case (.failed, .close):
            state = .closed
            return []
        case (.closed, _), (.failed, _):
            return []
        case (_, .close), (_, .peerClosed):
            state = .closed
            return [.cancelHandshakeTimer, .teardown]
        case (.awaitingOffer, .offer):
            state = .connecting(iceConnected: false)
            return [.answer, .armHandshakeTimer]
        case (_, .offer):
            // A renegotiation on the same transport: answered, ICE and DTLS go on.
            return [.answer]
        case (_, .badOffer(let error)):
            return [.reject(error)]
        case (.connecting(false), .iceConnected):
            state = .connecting(iceConnected: true)
            return [.startDTLS]
        case (.connecting, .dtlsConnected):
            state = .connected
            return [.cancelHandshakeTimer, .report(nil), .requestKeyframe]
        case (.awaitingOffer, .handshakeTimeout), (.connecting, .handshakeTimeout):
            return fail(MediaError(.dtlsTimeout, "the relay leg did not connect in time"))
        case (_, .iceFailed):
            return fail(MediaError(.iceFailed, "ICE to the relay failed"))
        case (.connecting, .dtlsFailed(let error)), (.connected, .dtlsFailed(let error)):
            return fail(error)
        default:
            return []
        }
    }

    private mutating func fail(_ error: MediaError) -> [Action] {
        state = .failed(error)
        return [.cancelHandshakeTimer, .report(error), .teardown]
    }
}
