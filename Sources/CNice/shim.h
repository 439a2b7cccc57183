#include <nice/agent.h>
#include <glib.h>
#include <glib-object.h>

/* g_object_set and g_signal_connect are varargs or macros, which do not import into Swift. */

static inline void tandem_nice_agent_configure(NiceAgent *agent, const char *stun_server, guint stun_port) {
    g_object_set(G_OBJECT(agent), "upnp", FALSE, "ice-tcp", FALSE, NULL);
    if (stun_server != NULL) {
        g_object_set(G_OBJECT(agent), "stun-server", stun_server, "stun-server-port", stun_port, NULL);
    }
}

static inline void tandem_nice_agent_set_controlling(NiceAgent *agent, gboolean controlling) {
    g_object_set(G_OBJECT(agent), "controlling-mode", controlling, NULL);
}

static inline gulong tandem_signal_connect(gpointer instance, const char *signal, GCallback handler, gpointer data) {
    return g_signal_connect_data(instance, signal, handler, data, NULL, (GConnectFlags)0);
}

/* Typed casts for the handlers Swift defines with @convention(c). */
typedef void (*tandem_new_candidate_cb)(NiceAgent *, NiceCandidate *, gpointer);
typedef void (*tandem_state_changed_cb)(NiceAgent *, guint, guint, guint, gpointer);
typedef void (*tandem_gathering_done_cb)(NiceAgent *, guint, gpointer);

static inline GCallback tandem_new_candidate_callback(tandem_new_candidate_cb cb) { return (GCallback)cb; }
static inline GCallback tandem_state_changed_callback(tandem_state_changed_cb cb) { return (GCallback)cb; }
static inline GCallback tandem_gathering_done_callback(tandem_gathering_done_cb cb) { return (GCallback)cb; }

static inline GObject *tandem_g_object(gpointer p) { return G_OBJECT(p); }
