package leaktest

import "testing"

func TestFind(t *testing.T) {
	sealed := []string{"enc:v1:AAAABBBBCCCCDDDDEEEE"}
	for _, c := range []struct{ out, want string }{
		{"all clear: enc: value does not decrypt", ""},
		{"key sk-secret here", "sk-secret"},
		{"a piece xBBBBCCCCDDDDx of it", "BBBBCCCCDDDD"},
		{"too short a piece: BBBBCCCCDDD", ""},
	} {
		if got := Find(c.out, []string{"sk-secret", ""}, sealed); got != c.want {
			t.Errorf("Find(%q) = %q, want %q", c.out, got, c.want)
		}
	}
}
