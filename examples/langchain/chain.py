"""A LangChain chain (prompt | model | parser), streamed and batched, scheduled by AIOS.

Run: python examples/langchain/chain.py
"""

from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_openai import ChatOpenAI

import aios

aios.patch("langchain", max_tokens=64)

prompt = ChatPromptTemplate.from_messages(
    [
        ("system", "You are a world class technical writer. Answer in one or two sentences."),
        ("user", "{input}"),
    ]
)
llm = ChatOpenAI(model="gpt-4o-mini", api_key="unused")  # AIOS answers; the key is never sent
chain = prompt | llm | StrOutputParser()

if __name__ == "__main__":
    for chunk in chain.stream({"input": "What is an operating system?"}):
        print(chunk, end="", flush=True)
    print()
    # batch: the calls run concurrently and the kernel batches them on the model
    for answer in chain.batch([{"input": "What is a scheduler?"}, {"input": "What is a syscall?"}]):
        print("-", answer)
