package auth_test

import "github.com/hodei-jobs/hodei/store"

func storeFilter() store.AuditFilter { return store.AuditFilter{Limit: 100} }
