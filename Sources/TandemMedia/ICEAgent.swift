import TandemMediaCore
import CNice

/// The ICE states a relay leg cares about.
public enum ICEState: Sendable, Equatable {
    case connected, failed
}

/// What an `ICEAgent` reports, on its loop thread.
public protocol ICEAgentDelegate: AnyObject {
    /// A local candidate gathered after `start()` returned, as an SDP attribute value (`candidate:…`, no `a=`).
    func ice(gathered candidate: String)
    /// Gathering finished after `start()` returned.
    func iceGatheringDone()
    func ice(state: ICEState)
    /// One datagram from the selected pair: STUN is consumed by libnice, so this is DTLS, SRTP or SRTCP.
    func ice(received datagram: UnsafeMutableRawBufferPointer)
}

/// One libnice agent: full ICE (RFC 5245 compatibility), trickle both ways, consent freshness, one
/// stream with one component (the relay requires BUNDLE and rtcp-mux). Confined to its loop's thread;
/// `close()` must be called there, and the agent lives until libnice confirms the close.
public final class ICEAgent {
    private var agent: OpaquePointer?
    public let streamID: UInt32
    public let localUfrag: String
    public let localPassword: String
    private unowned let delegate: any ICEAgentDelegate
    private let loop: MediaLoop
    private let configuration: ICEConfiguration
    private var closed = false
    /// Whether `start` retained self for the callbacks (released when the close completes).
    private var retainedForCallbacks = false
    /// What gathering reports while `start()` runs (libnice gathers host candidates synchronously),
    /// handed back by `start()` rather than to the delegate.
    private var early: (candidates: [String], done: Bool)?

    public init(loop: MediaLoop, configuration: ICEConfiguration, controlling: Bool, delegate: any ICEAgentDelegate) throws(MediaError) {
        precondition(loop.isCurrent, "an ICE agent is made on its loop")
        self.loop = loop
        self.delegate = delegate
        self.configuration = configuration
        let options = NiceAgentOption(rawValue: NICE_AGENT_OPTION_ICE_TRICKLE.rawValue | NICE_AGENT_OPTION_CONSENT_FRESHNESS.rawValue)
        guard let agent = nice_agent_new_full(loop.context, NICE_COMPATIBILITY_RFC5245, options) else {
            throw MediaError(.unavailable, "libnice could not make an agent")
        }
        self.agent = agent
        tandem_nice_agent_configure(agent, configuration.stunServer?.host, guint(configuration.stunServer?.port ?? 0))
        tandem_nice_agent_set_controlling(agent, controlling ? 1 : 0)
        var added = 0
        for text in configuration.addresses {
            var address = NiceAddress()
            nice_address_init(&address)
            guard nice_address_set_from_string(&address, text) != 0 else { continue }
            if nice_agent_add_local_address(agent, &address) != 0 { added += 1 }
        }
        guard added > 0 else {
            g_object_unref(UnsafeMutableRawPointer(agent))
            throw MediaError(.unavailable, "none of the relay addresses \(configuration.addresses) is usable")
        }
        streamID = nice_agent_add_stream(agent, 1)
        guard streamID != 0 else {
            g_object_unref(UnsafeMutableRawPointer(agent))
            throw MediaError(.unavailable, "libnice refused a stream")
        }
        if let range = configuration.portRange {
            nice_agent_set_port_range(agent, streamID, 1, guint(range.lowerBound), guint(range.upperBound))
        }
        var ufrag: UnsafeMutablePointer<gchar>?
        var pwd: UnsafeMutablePointer<gchar>?
        nice_agent_get_local_credentials(agent, streamID, &ufrag, &pwd)
        localUfrag = ufrag.map { String(cString: $0) } ?? ""
        localPassword = pwd.map { String(cString: $0) } ?? ""
        g_free(ufrag)
        g_free(pwd)
    }

    /// Connects the callbacks and starts gathering. Returns what was gathered at once (the host
    /// candidates, which an answer can carry) and whether gathering is already done; the delegate hears
    /// only what comes later.
    @discardableResult
    public func start() throws(MediaError) -> (candidates: [String], gatheringDone: Bool) {
        guard let agent, !retainedForCallbacks else { return ([], false) }
        // Retained until the close completes, so callbacks never see a freed owner.
        retainedForCallbacks = true
        let me = Unmanaged.passRetained(self).toOpaque()
        _ = tandem_signal_connect(UnsafeMutableRawPointer(agent), "new-candidate-full", tandem_new_candidate_callback { agent, candidate, data in
            guard let agent, let candidate, let data else { return }
            let me = Unmanaged<ICEAgent>.fromOpaque(data).takeUnretainedValue()
            guard !me.closed, let sdp = nice_agent_generate_local_candidate_sdp(agent, candidate) else { return }
            defer { g_free(sdp) }
            var line = String(cString: sdp)
            if line.hasPrefix("a=") { line.removeFirst(2) }
            line = me.configuration.advertised(line)
            if me.early != nil { return me.early!.candidates.append(line) }
            me.delegate.ice(gathered: line)
        }, me)
        _ = tandem_signal_connect(UnsafeMutableRawPointer(agent), "candidate-gathering-done", tandem_gathering_done_callback { _, _, data in
            guard let data else { return }
            let me = Unmanaged<ICEAgent>.fromOpaque(data).takeUnretainedValue()
            guard !me.closed else { return }
            if me.early != nil { return me.early!.done = true }
            me.delegate.iceGatheringDone()
        }, me)
        _ = tandem_signal_connect(UnsafeMutableRawPointer(agent), "component-state-changed", tandem_state_changed_callback { _, _, _, state, data in
            guard let data else { return }
            let me = Unmanaged<ICEAgent>.fromOpaque(data).takeUnretainedValue()
            guard !me.closed else { return }
            switch state {
            case NICE_COMPONENT_STATE_CONNECTED.rawValue, NICE_COMPONENT_STATE_READY.rawValue: me.delegate.ice(state: .connected)
            case NICE_COMPONENT_STATE_FAILED.rawValue: me.delegate.ice(state: .failed)
            default: break
            }
        }, me)
        nice_agent_attach_recv(agent, streamID, 1, loop.context, { _, _, _, length, buffer, data in
            guard let buffer, let data, length > 0 else { return }
            let me = Unmanaged<ICEAgent>.fromOpaque(data).takeUnretainedValue()
            guard !me.closed else { return }
            me.delegate.ice(received: UnsafeMutableRawBufferPointer(start: buffer, count: Int(length)))
        }, me)
        early = ([], false)
        defer { early = nil }
        guard nice_agent_gather_candidates(agent, streamID) != 0 else {
            throw MediaError(.unavailable, "libnice could not gather candidates")
        }
        return (early?.candidates ?? [], early?.done ?? false)
    }

    public func setRemoteCredentials(ufrag: String, password: String) -> Bool {
        guard let agent, !closed else { return false }
        return nice_agent_set_remote_credentials(agent, streamID, ufrag, password) != 0
    }

    /// Adds one remote candidate (`candidate:…`, with or without `a=`). False if libnice cannot use it
    /// (mDNS `.local` names, TCP, another component, garbage) or its address is one the relay must not
    /// probe (`ICEConfiguration.acceptsRemote(address:)`, judged on the address as libnice parsed it).
    @discardableResult
    public func addRemoteCandidate(_ value: String) -> Bool {
        guard let agent, !closed, value.utf8.count < 512 else { return false }
        let line = value.hasPrefix("a=") ? value : "a=" + value
        guard let candidate = nice_agent_parse_remote_candidate_sdp(agent, streamID, line) else { return false }
        defer { nice_candidate_free(candidate) }
        guard candidate.pointee.component_id == 1 else { return false }
        var text = [CChar](repeating: 0, count: 64)
        nice_address_to_string(&candidate.pointee.addr, &text)
        guard configuration.acceptsRemote(address: String(cString: text)) else { return false }
        let list = g_slist_append(nil, candidate)
        defer { g_slist_free(list) }
        return nice_agent_set_remote_candidates(agent, streamID, 1, list) > 0
    }

    public func remoteGatheringDone() {
        guard let agent, !closed else { return }
        nice_agent_peer_candidate_gathering_done(agent, streamID)
    }

    /// Sends one datagram on the selected pair; false while there is none.
    @inline(__always)
    public func send(_ bytes: UnsafeRawPointer, count: Int) -> Bool {
        guard let agent else { return false }
        return nice_agent_send(agent, streamID, 1, guint(count), bytes.assumingMemoryBound(to: gchar.self)) == count
    }

    /// Stops callbacks at once and releases the agent once libnice has finished closing (it may still
    /// send TURN deallocations and consent revocations meanwhile).
    public func close() {
        guard !closed, let agent else { return }
        closed = true
        nice_agent_attach_recv(agent, streamID, 1, loop.context, nil, nil)
        let me = Unmanaged.passUnretained(self).toOpaque()
        g_signal_handlers_disconnect_matched(tandem_g_object(UnsafeMutableRawPointer(agent)), G_SIGNAL_MATCH_DATA, 0, 0, nil, nil, me)
        self.agent = nil
        guard retainedForCallbacks else { return g_object_unref(UnsafeMutableRawPointer(agent)) }
        nice_agent_close_async(agent, { source, _, data in
            g_object_unref(source)
            if let data { Unmanaged<ICEAgent>.fromOpaque(data).release() }
        }, me)
    }
}
