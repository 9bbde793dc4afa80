package config

import "time"

// File is the schema of hodei.yaml: every setting of `hodei server` and `hodei dev`.
// A key is its flag's name with "-" written "_" (--heartbeat-interval is
// heartbeat_interval), except that the settings of a section sit under the section's
// key (--docker-max-workers is max_workers under docker:) and --provider is the list
// providers. Fields tagged `config:"file-only"` have no flag: they hold maps and lists
// a command line cannot say well, and the server reads them from File itself.
type File struct {
	Listen      string `yaml:"listen"`
	DatabaseURL string `yaml:"database_url"`
	NATSURL     string `yaml:"nats_url"`
	// An embedded NATS cluster (hodei server only) and the streams' replicas.
	NATSClusterListen string   `yaml:"nats_cluster_listen"`
	NATSRoutes        []string `yaml:"nats_routes"`
	NATSClusterName   string   `yaml:"nats_cluster_name"`
	NATSReplicas      int      `yaml:"nats_replicas"`
	// WorkerServers are the URLs workers dial: every replica's, or one name (hodei
	// server only).
	WorkerServers []string `yaml:"worker_servers"`
	// RetainOutbox is how long relayed outbox rows are kept, and the others how long
	// ended sagas, ended jobs, their log lines and idempotency keys are (package
	// retention).
	RetainOutbox      time.Duration `yaml:"retain_outbox"`
	RetainSagas       time.Duration `yaml:"retain_sagas"`
	RetainJobs        time.Duration `yaml:"retain_jobs"`
	RetainLogs        time.Duration `yaml:"retain_logs"`
	RetainIdempotency time.Duration `yaml:"retain_idempotency"`
	DataDir           string        `yaml:"data_dir"`
	LogLevel          string        `yaml:"log_level"`
	// LogFormat is text or json; MetricsListen a second address for /metrics.
	LogFormat     string `yaml:"log_format"`
	MetricsListen string `yaml:"metrics_listen"`
	// MaxWorkers is the local provider's capacity (same as Local.MaxWorkers).
	MaxWorkers int `yaml:"max_workers"`
	// Providers are the worker providers, in the order jobs try them.
	Providers []string `yaml:"providers"`
	// ProviderStrategy is first-fit or least-loaded.
	ProviderStrategy string `yaml:"provider_strategy"`

	AdminToken         string   `yaml:"admin_token"`
	Auth               bool     `yaml:"auth"`
	BootstrapTokenFile string   `yaml:"bootstrap_token_file"`
	Insecure           bool     `yaml:"insecure"`
	SecretsKeyFile     string   `yaml:"secrets_key_file"`
	SecretsOldKeyFile  []string `yaml:"secrets_old_key_file"`
	TLSCert            string   `yaml:"tls_cert"`
	TLSKey             string   `yaml:"tls_key"`
	TLSClientCA        string   `yaml:"tls_client_ca"`
	TLSWorkerCA        string   `yaml:"tls_worker_ca"`

	RegistrationTimeout time.Duration `yaml:"registration_timeout"`
	HeartbeatInterval   time.Duration `yaml:"heartbeat_interval"`
	WorkerLostAfter     time.Duration `yaml:"worker_lost_after"`
	DisconnectGrace     time.Duration `yaml:"disconnect_grace"`
	CleanupInterval     time.Duration `yaml:"cleanup_interval"`
	CreatingTimeout     time.Duration `yaml:"creating_timeout"`
	CleanupDryRun       bool          `yaml:"cleanup_dry_run"`
	LeaderTTL           time.Duration `yaml:"leader_ttl"`
	NodeTimeout         time.Duration `yaml:"node_timeout"`

	// WarmWorkers and WarmMaxJobs are the default warm pool (--warm-workers,
	// --warm-max-jobs).
	WarmWorkers int `yaml:"warm_workers"`
	WarmMaxJobs int `yaml:"warm_max_jobs"`
	// Pools are further warm pools, per provider and image (file-only).
	Pools []Pool `yaml:"pools" config:"file-only"`

	// Sections: one per provider (and per later feature). A section is a struct
	// field; its flags are named --<section>-<key>.
	Local  Local  `yaml:"local"`
	Docker Docker `yaml:"docker"`
	Kube   Kube   `yaml:"kube"`
}

// Local is the local provider's section (flags --local-*).
type Local struct {
	MaxWorkers int `yaml:"max_workers"`
}

// Docker is the docker provider's section (flags --docker-*).
type Docker struct {
	Host         string `yaml:"host"`
	MaxWorkers   int    `yaml:"max_workers"`
	Network      string `yaml:"network"`
	Agent        string `yaml:"agent"`
	DefaultImage string `yaml:"default_image"`
	// Labels are written as a mapping (gpu: "true"); the flag takes K=V items.
	Labels map[string]string `yaml:"labels"`
}

// Kube is the kubernetes provider's section (flags --kube-*, and --kubeconfig for its
// kubeconfig key); see provider/kubernetes.Config for what each key does.
type Kube struct {
	Kubeconfig           string        `yaml:"kubeconfig"`
	Namespace            string        `yaml:"namespace"`
	MaxWorkers           int           `yaml:"max_workers"`
	ServerURL            string        `yaml:"server_url"`
	AgentImage           string        `yaml:"agent_image"`
	DefaultImage         string        `yaml:"default_image"`
	ServiceAccount       string        `yaml:"service_account"`
	UnschedulableTimeout time.Duration `yaml:"unschedulable_timeout"`
	HostNetwork          bool          `yaml:"host_network"`
	RequestPercent       int           `yaml:"request_percent"`
	// Labels are the provider's labels, matched by jobs' selectors (like docker's).
	Labels map[string]string `yaml:"labels"`
	// NodeSelector, Tolerations and PodLabels go into every worker pod.
	NodeSelector map[string]string `yaml:"node_selector" config:"file-only"`
	Tolerations  []Toleration      `yaml:"tolerations" config:"file-only"`
	PodLabels    map[string]string `yaml:"pod_labels" config:"file-only"`
	// Security loosens the worker containers' default security context.
	Security KubeSecurity `yaml:"security" config:"file-only"`
}

// Toleration is one of kube.tolerations (a Kubernetes toleration).
type Toleration struct {
	Key               string `yaml:"key"`
	Operator          string `yaml:"operator"`
	Value             string `yaml:"value"`
	Effect            string `yaml:"effect"`
	TolerationSeconds *int64 `yaml:"toleration_seconds"`
}

// KubeSecurity is kube.security: by default the worker containers run with no
// privilege escalation, every capability dropped and seccomp RuntimeDefault.
type KubeSecurity struct {
	AllowPrivilegeEscalation bool     `yaml:"allow_privilege_escalation"`
	KeepCapabilities         bool     `yaml:"keep_capabilities"`
	AddCapabilities          []string `yaml:"add_capabilities"`
	Seccomp                  string   `yaml:"seccomp"`
	RunAsUser                *int64   `yaml:"run_as_user"`
	RunAsNonRoot             bool     `yaml:"run_as_non_root"`
}

// Pool is one warm pool of the pools list (jobs.PoolConfig, whose documentation says
// what each key does; the server checks the values and names pools[i].key).
type Pool struct {
	Name             string        `yaml:"name"`
	Provider         string        `yaml:"provider"`
	Image            string        `yaml:"image"`
	Pull             string        `yaml:"pull"`
	CPU              string        `yaml:"cpu"`
	Memory           string        `yaml:"memory"`
	Namespace        string        `yaml:"namespace"`
	MinIdle          int           `yaml:"min_idle"`
	MaxIdle          int           `yaml:"max_idle"`
	IdleTTL          time.Duration `yaml:"idle_ttl"`
	MaxJobsPerWorker int           `yaml:"max_jobs_per_worker"`
}
