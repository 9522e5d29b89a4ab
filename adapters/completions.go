package adapters

// Legacy text completions (POST /completions) exist on OpenAI-compatible
// upstreams only. They travel as chat does: the body with only "model"
// rewritten (and, for a stream, the usage chunk asked for), the answer and
// its text_completion chunks relayed as they are, a stream ended by
// [DONE] or by a chunk with a finish_reason or the usage.

// Complete sends one legacy completion attempt with the key at c.Key.
func (o *openAI) Complete(c *Call, r *Reply) error {
	return o.post(&o.completions, c, r, c.Stream, "choices")
}

// textCompletion is an OpenAI text_completion answer or stream chunk.
type textCompletion struct {
	ID      string       `json:"id"`
	Object  string       `json:"object"`
	Created int64        `json:"created"`
	Model   string       `json:"model"`
	Choices []textChoice `json:"choices"`
	Usage   *UsageJS     `json:"usage,omitempty"`
}

// textChoice is one choice of a text completion. Logprobs is always null:
// nothing the gateway makes has any.
type textChoice struct {
	Text         string    `json:"text"`
	Index        int       `json:"index"`
	Logprobs     *struct{} `json:"logprobs"`
	FinishReason *string   `json:"finish_reason"`
}
