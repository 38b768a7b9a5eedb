"""Models, one module per paper, each assembled from ``ref.nn`` and ``ref.mixers`` as forward/backward
pairs over a nested dict of parameters.

* ``gla``: the GLA layer and block (Gated Linear Attention Transformers).
* ``retnet``: multi-scale retention and the RetNet block.
* ``vir``: ViR (retention, class token last) and its ViT baseline (softmax attention, same backbone).
* ``lightnet``: LightNet's layer, block and 2-D classifier with MD-TPE and MD-LRPE.
* ``multiscan``: GLA along several scan orders of a grid (LightNet's multiplicative-decay baseline).
* ``transformer``: GPT-2 and Llama-style blocks, a decoder LM with KV-cache generation, an encoder.
* ``mamba``: the Mamba layer and block with its decode step.
* ``mom``: the MoM layer (routed and shared memories, load-balancing loss).
* ``mamba2``: the Mamba-2 (SSD) layer, block and decode step.
* ``s4``: the deep S4 / S4D model (HiPPO-LegS or random initialisation), convolutional and recurrent forms.
* ``convs5``: a ConvS5 next-frame model; ``convlstm``: the ConvLSTM baseline (backprop through time).
* ``qlstm``: the Languini quasi-LSTM layer and block (block-parallel and recurrent forms).
* ``titans``: the Titans neural memory layer and the MAL and MAC blocks; ``titans_lesson``: the
  segment-only attention baseline of lesson 17.
* ``rnn_review``: an RNN/LSTM/GRU (stacked, bidirectional) with a linear head; dL/dh_t over time.
* ``pointer_net``: Pointer Networks, an LSTM encoder-decoder whose attention is the output, and its
  fixed-vocabulary seq2seq baseline.
* ``tcnca``: TCNCA's dilated TCN, chunked attention and simplified block (registers the LM block "tcnca").
* ``icl_lsa``: linear self-attention over regression prompts, and the weights that make it gradient descent.
* ``dsf_lm``: softmax, linear and normalised attention blocks of the dynamical-systems-framework lesson.
* ``lm``: a small decoder-only language model whose blocks are chosen from a registry.

Layers and blocks: ``forward(params, x, **options) -> (y, cache)``,
``backward(params, cache, dy) -> (dx, grads)``; whole models return ``grads`` only.
"""
