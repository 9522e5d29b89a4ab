package adapters

import (
	"bytes"
	"errors"
	"io"
	"strings"
)

// This file translates Gemini's SSE stream into OpenAI chunks.

// geminiStream translates Gemini's SSE stream, one GenerateContentResponse
// per event, into OpenAI chunks.
type geminiStream struct {
	// up reads the upstream's frames under the provider's first_byte and
	// idle deadlines; its OpenAI end-of-stream rules never match a Gemini
	// event, so ends are judged here.
	up          openAIStream
	model       string
	id          string
	created     int64
	clientUsage bool
	// out holds the translated frames of the last event; pending what of
	// it is still to go.
	out     []byte
	pending [][]byte
	scratch []byte
	started bool
	// finish is the finish_reason sent, once sent.
	finish string
	ended  bool
	// calls counts the function calls so far: each is a tool_calls index.
	calls   int
	usageJS *UsageJS
	streamRedactor
}

// Next returns the next translated frame.
func (s *geminiStream) Next() ([]byte, error) { return s.pass(s.next()) }

func (s *geminiStream) next() ([]byte, error) {
	for {
		if len(s.pending) > 0 {
			f := s.pending[0]
			s.pending = s.pending[1:]
			return f, nil
		}
		if s.ended {
			return nil, io.EOF
		}
		frame, err := s.up.Next()
		if err != nil {
			if s.finish != "" {
				// The answer is whole; what follows its finish (the end
				// of the body, or a late cut) changes nothing.
				s.end()
				continue
			}
			if errors.Is(err, io.EOF) {
				return nil, ErrStreamCut
			}
			return nil, err
		}
		data, ok := frameData(frame, s.scratch)
		if !ok {
			continue
		}
		if bytes.Equal(data, strDone) {
			if s.finish == "" {
				return nil, ErrStreamCut
			}
			s.end()
			continue
		}
		if err := s.event(data); err != nil {
			return nil, err
		}
	}
}

// event translates one upstream event into pending frames.
func (s *geminiStream) event(data []byte) error {
	var in geminiResponse
	if err := decodeUpstream(data, &in); err != nil {
		return &Failure{Class: Retryable, Msg: "upstream sent a stream event that is not a Gemini response"}
	}
	if in.UsageMetadata != nil {
		s.usageJS = in.UsageMetadata.usage()
	}
	if s.finish != "" {
		// Past the finish only the usage counts.
		return nil
	}
	if in.Error != nil {
		f := geminiErrorFailure(in.Error, in.Error.status(), nil)
		f.Msg = "upstream stream error: " + f.Msg
		return f
	}
	s.out, s.pending = s.out[:0], s.pending[:0]
	if !s.started {
		s.started = true
		s.id = geminiID(in.ResponseID, data)
		if in.ModelVersion != "" {
			s.model = in.ModelVersion
		}
		s.add(&ChatMessage{Role: "assistant", Content: Ptr("")}, nil)
	}
	reason := ""
	if len(in.Candidates) > 0 {
		cand := in.Candidates[0]
		var text strings.Builder
		var calls []ToolCall
		for _, p := range cand.Content.Parts {
			switch {
			case p.Thought:
			case p.FunctionCall != nil:
				tc := geminiToolCall(s.id, s.calls, p.FunctionCall)
				tc.Index = Ptr(s.calls)
				s.calls++
				calls = append(calls, tc)
			default:
				text.WriteString(p.Text)
			}
		}
		if text.Len() > 0 {
			s.add(&ChatMessage{Content: Ptr(text.String())}, nil)
		}
		if len(calls) > 0 {
			s.add(&ChatMessage{ToolCalls: calls}, nil)
		}
		if cand.FinishReason != "" {
			reason = geminiFinish(cand.FinishReason, s.calls > 0)
		}
	} else if in.PromptFeedback != nil && in.PromptFeedback.BlockReason != "" {
		reason = "content_filter"
	}
	if reason != "" {
		s.finish = reason
		s.add(&ChatMessage{}, &reason)
	}
	return nil
}

// add queues one chunk.
func (s *geminiStream) add(delta *ChatMessage, finish *string) {
	ch := Chunk{ID: s.id, Object: "chat.completion.chunk", Created: s.created, Model: s.model,
		Choices: []Choice{{Delta: delta, FinishReason: finish}}}
	s.queue(&ch)
}

func (s *geminiStream) queue(ch *Chunk) {
	start := len(s.out)
	s.out = appendFrame(s.out, ch)
	s.pending = append(s.pending, s.out[start:len(s.out):len(s.out)])
}

// end queues the usage chunk, if the client asked for it, and [DONE].
func (s *geminiStream) end() {
	s.ended = true
	// Whatever stopped the read, the answer is complete: the connection
	// goes back to the pool if its body was read to the end.
	s.up.done = true
	s.out, s.pending = s.out[:0], s.pending[:0]
	if s.clientUsage && s.usageJS != nil {
		s.queue(&Chunk{ID: s.id, Object: "chat.completion.chunk", Created: s.created, Model: s.model,
			Choices: []Choice{}, Usage: s.usageJS})
	}
	start := len(s.out)
	s.out = append(s.out, doneFrame...)
	s.pending = append(s.pending, s.out[start:])
}

// Usage returns the last usageMetadata's counts.
func (s *geminiStream) Usage() Usage { return s.usageJS.Usage() }

// Close releases the upstream connection; it is safe to call twice.
func (s *geminiStream) Close() { s.up.Close() }
