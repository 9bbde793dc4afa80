package sqlite

import (
	"testing"

	"github.com/hodei-jobs/hodei/store/storetest"
)

func TestAuthConformance(t *testing.T) { storetest.RunAuth(t, factory) }
