// Package config reads hodei.yaml, the file given to `hodei server` and `hodei dev` by
// --config (or HODEI_SERVER_CONFIG).
//
// # Schema
//
// File is the whole schema, a typed struct with yaml tags. Its keys are the commands'
// flags: --heartbeat-interval is heartbeat_interval, and a flag whose first word names
// a section is a key of that section (--docker-max-workers is max_workers under
// docker:). FlagForKey and KeyForFlag turn one into the other; the only renamed keys are
// providers (--provider) and kube.kubeconfig (--kubeconfig). Fields tagged `config:"file-only"` have no flag: maps and
// lists of records that a command line cannot say well (a provider's node selector,
// tolerations, warm pools). A test in cmd/hodei checks that every flag of the two
// commands has its key here and every other key has its flag.
//
// # Strictness
//
// Parse walks the YAML tree against File before decoding it (with KnownFields): an
// unknown key, a value of the wrong type, a key without a value or given twice, and a
// second document are refused, naming FILE:LINE and the key's path
// (hodei.yaml:7: docker.max_workers: want an integer, got "many").
//
// # Precedence
//
// flag > HODEI_* variable > file > default. The command applies Loaded.Settings to its
// flags that were neither given nor set from the environment, through the flags' own
// parsers (cmd/hodei/config_file.go), so the flags' checks run on file values too. A
// key the running command has no flag for (database_url under `hodei dev`) is refused.
//
// # Adding a section
//
// A feature with settings of its own (a provider, warm pools) adds them here:
//
//  1. Define its struct in this package, e.g. type Kubernetes struct { Namespace
//     string `yaml:"namespace"`; NodeSelector map[string]string
//     `yaml:"node_selector" config:"file-only"`; ... }, with yaml tags in snake_case.
//  2. Add it to File as a field: Kubernetes Kubernetes `yaml:"kubernetes"` (a
//     section), or a list at the top level: WarmPools []WarmPool `yaml:"warm_pools"
//     config:"file-only"`.
//  3. Name its flags --kubernetes-<key> (the key with "_" as "-"): they then read the
//     section's keys by themselves. File-only fields are copied from Loaded.File into
//     server.Config by the command.
//
// Nothing registers at run time; the schema is this package's types.
package config
