# Types of qbox's native module (python/src/*.rs). Import from `qbox`, not
# from here: this module's own names (NativeClient, NativeStream) may change.
from typing import Any, ClassVar, Dict, List, Optional, Tuple

__version__: str

class AssistantResponseEvent:
    """A piece of the answer's text (``assistantResponseEvent``)."""
    event_type: ClassVar[str]
    @property
    def content(self) -> str: ...
    @property
    def model_id(self) -> Optional[str]: ...

class MessageMetadataEvent:
    """The answer's conversation id (``messageMetadataEvent``), first."""
    event_type: ClassVar[str]
    @property
    def conversation_id(self) -> Optional[str]: ...
    @property
    def utterance_id(self) -> Optional[str]: ...

class ToolUseEvent:
    """A fragment of a tool use: ``input`` fragments of one ``tool_use_id``
    join up to the event with ``stop`` set (``toolUseEvent``)."""
    event_type: ClassVar[str]
    @property
    def tool_use_id(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def input(self) -> Optional[str]: ...
    @property
    def stop(self) -> bool: ...

class CodeEvent:
    """Code in the answer (``codeEvent``)."""
    event_type: ClassVar[str]
    @property
    def content(self) -> str: ...

class CodeReferenceEvent:
    """Licensed code the answer draws on (``codeReferenceEvent``):
    ``references`` as the service sends them (``licenseName``,
    ``repository``, ``url``, ``recommendationContentSpan``)."""
    event_type: ClassVar[str]
    @property
    def references(self) -> List[Dict[str, Any]]: ...
    @property
    def payload(self) -> Dict[str, Any]: ...

class CitationEvent:
    """A source the answer cites (``citationEvent``)."""
    event_type: ClassVar[str]
    @property
    def citation_text(self) -> Optional[str]: ...
    @property
    def citation_link(self) -> Optional[str]: ...
    @property
    def target(self) -> Any: ...
    @property
    def payload(self) -> Dict[str, Any]: ...

class FollowupPromptEvent:
    """A follow-up question the service suggests (``followupPromptEvent``)."""
    event_type: ClassVar[str]
    @property
    def content(self) -> Optional[str]: ...
    @property
    def user_intent(self) -> Optional[str]: ...
    @property
    def payload(self) -> Dict[str, Any]: ...

class InvalidStateEvent:
    """The service's report of an invalid state (``invalidStateEvent``)."""
    event_type: ClassVar[str]
    @property
    def reason(self) -> Optional[str]: ...
    @property
    def message(self) -> Optional[str]: ...

class OtherEvent:
    """Any other event, known or new: its wire name and JSON payload."""
    @property
    def event_type(self) -> str: ...
    @property
    def payload(self) -> Any: ...

class ToolUse:
    """A whole tool use of ``Client.chat``'s answer."""
    @property
    def tool_use_id(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def input(self) -> str: ...

class ChatResponse:
    """``Client.chat``'s answer."""
    @property
    def text(self) -> str: ...
    @property
    def conversation_id(self) -> str: ...
    @property
    def tool_uses(self) -> List[ToolUse]: ...
    @property
    def code_references(self) -> List[Dict[str, Any]]: ...

class NativeStream:
    async def next_batch(self) -> Tuple[List[Any], bool]: ...
    def close(self) -> None: ...
    @property
    def conversation_id(self) -> Optional[str]: ...

class NativeClient:
    def __init__(
        self,
        db: Optional[str] = None,
        endpoint: Optional[str] = None,
        access_token: Optional[str] = None,
        profile_arn: Optional[str] = None,
    ) -> None: ...
    def stream(self, prompt: Any, conversation_id: Any = None, model: Optional[str] = None) -> NativeStream: ...
    async def chat(self, prompt: Any, conversation_id: Any = None, model: Optional[str] = None) -> ChatResponse: ...

def export_token(db: Optional[str] = None, field: Optional[str] = "access") -> Any: ...
def doctor() -> Dict[str, Any]: ...
