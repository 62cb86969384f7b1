"""Chat: rendering with the model's template (token-exact), hermes tool calls, OpenAI messages.

- `template.py`: prompts and observations rendered and tokenized exactly as the model sees them,
  and SFT conversations with their loss mask;
- `hermes.py`: the `<tool_call>` text the model writes, parsed and built in one place, and the
  code interpreter's schema;
- `messages.py`: between hermes text and the OpenAI chat format (`tool_calls`), both ways.
"""

from toolrl.chat.hermes import (
    CODE_INTERPRETER,
    CODE_INTERPRETER_SCHEMA,
    TOOL_CALL_CLOSE,
    TOOL_CALL_OPEN,
    ParsedCall,
    code_interpreter_call,
    has_tool_call,
    parse_tool_calls,
    tool_call_text,
)
from toolrl.chat.messages import (
    ConversationReader,
    ProtocolError,
    all_tool_calls,
    assistant_message,
    template_messages,
    turn_text,
    wire_messages,
)
from toolrl.chat.template import (
    ObservationWrapper,
    Rendered,
    TemplateError,
    encode,
    end_of_turn_token,
    first_difference,
    render,
    render_with_mask,
)

__all__ = [
    "CODE_INTERPRETER",
    "CODE_INTERPRETER_SCHEMA",
    "TOOL_CALL_CLOSE",
    "TOOL_CALL_OPEN",
    "ConversationReader",
    "ObservationWrapper",
    "ParsedCall",
    "ProtocolError",
    "Rendered",
    "TemplateError",
    "all_tool_calls",
    "assistant_message",
    "code_interpreter_call",
    "encode",
    "end_of_turn_token",
    "first_difference",
    "has_tool_call",
    "parse_tool_calls",
    "render",
    "render_with_mask",
    "template_messages",
    "tool_call_text",
    "turn_text",
    "wire_messages",
]
